"""The delivery engine: from a confirmed appeal to the relay's ``250`` for every copy.

Read it in the order an appeal travels:

* :mod:`.queue`: RQ queues, enqueueing, and the wake-up call a confirm sends;
* :mod:`.dispatcher`: gathers due appeals into batches, one campaign each, and
  recovers whatever Redis or a dead worker lost;
* :mod:`.jobs`: the three RQ jobs, which build the runner's parts;
* :mod:`.runner`: one batch over one SMTP session: claim, compose, pace, send, record;
* :mod:`.pacing`: token buckets per receiving domain and per address;
* :mod:`.transport`: the SMTP session, pipelined across messages;
* :mod:`.policy`: what each SMTP reply means;
* :mod:`.recipients`: each recipient's copy and its state; an appeal is sent when all are;
* :mod:`.journal`: the acceptance notes that bridge the relay's 250 and the database;
* :mod:`.confirmations`: the supporters' confirmation mail, batched the same way;
* :mod:`.receipts`: the supporter's receipt, once the main addressee has the appeal.

States change only through :func:`campaign.states.move`.
"""
