"""The dispatcher: gathers due appeals into batches for the workers, and finds again in
the database whatever Redis lost.

Appeals arrive one at a time, as supporters press confirm. Each confirm wakes the
dispatcher (:func:`~.queue.wake_dispatcher`); it hands every due appeal to a job,
in batches of up to ``DELIVERY_BATCH_SIZE`` grouped by campaign (one campaign's
appeals go to one ministry's mail server, so a batch shares one SMTP session and
one receiving domain), then gathers for ``DISPATCH_WINDOW`` (200 ms) before its
next pass. So a lone appeal leaves at once, and under a spike the batches fill
up. The same goes for supporters' confirmation mail.

Redis is only the transport. Whatever it loses (a restart without persistence,
``FLUSHALL``, an expired job, a worker killed mid-batch) is found again here,
every ``SWEEP_INTERVAL``:

* ``sending`` appeals whose batch stopped its heartbeat for ``SENDING_LEASE_SECONDS``
  are recovered: the copies the relay accepted (the acceptance journal says so)
  are recorded as such, the others go out again;
* due appeals whose job is gone are handed to a new one, like new ones.

Supporters whose appeal reached its main addressee are handed to a receipts job
(:mod:`.receipts`), a few seconds later.

A campaign in digest mode has its queued appeals wait for its digest, which this
loop sends when due (:mod:`campaign.digests`, looked for every minute).

Every hour it also applies retention (:mod:`campaign.retention`). Run it with
``flask --app app appeals dispatch`` (``make run`` starts it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, text

from .. import bounces, digests, sending, snapshots
from ..db import db, utcnow
from ..models import DUE, IN_FLIGHT, NOTICE_DUE, UNMAILED, Appeal, Status
from ..retention import apply_retention
from . import journal, receipts, recipients
from .policy import MAX_ATTEMPTS
from .queue import (
    CONFIRM,
    DELIVER,
    QUEUE_OF,
    RECEIPT,
    Alarm,
    enqueue_many,
    new_job_id,
    rq,
    waiting_jobs,
)
from .recipients import Outcome, Result

DISPATCH_LIMIT = 50_000
"""Appeals considered per pass; the next pass takes the rest."""

RETENTION_INTERVAL = 3600.0
"""Seconds between two passes of :func:`campaign.retention.apply_retention`."""


@dataclass
class Report:
    recovered_sent: int = 0
    recovered_queued: int = 0
    enqueued: int = 0
    jobs: int = 0
    confirmations: int = 0
    receipts: int = 0
    digests: int = 0


def recover_abandoned(report: Report) -> None:
    """Take back the ``sending`` appeals of batches whose heartbeat stopped."""
    cutoff = utcnow() - timedelta(seconds=float(current_app.config["SENDING_LEASE_SECONDS"]))
    stale = list(
        db.session.scalars(db.select(Appeal.id).where(text(IN_FLIGHT), Appeal.updated_at < cutoff))
    )
    if not stale:
        return
    redis = rq.connection()
    notes = journal.accepted(redis, stale)
    stored = recipients.load(notes)
    claims = dict(
        db.session.execute(db.select(Appeal.id, Appeal.attempts).where(Appeal.id.in_(stale))).all()
    )
    results = []
    for appeal_id in stale:
        if appeal_id in notes:
            copies = recipients.merge(
                stored.get(appeal_id, []), recipients.from_note(notes[appeal_id])
            )
            results.append(Result(appeal_id, recipients.outcome(copies), copies))
        elif claims.get(appeal_id, 0) >= MAX_ATTEMPTS:
            # An appeal whose worker keeps dying on it (it crashes the process, say)
            # must not cycle forever: it fails, visibly, for a manager to see.
            reason = f"its worker stopped while sending it {MAX_ATTEMPTS} times"
            results.append(Result(appeal_id, Outcome(Status.FAILED, reason)))
        else:
            reason = "its worker stopped before sending; queued again"
            results.append(Result(appeal_id, Outcome(Status.QUEUED, reason)))
    # Guarded by the lease: a batch that beat its heart meanwhile keeps its appeals.
    moved = set(recipients.record(results, older={"updated_at": cutoff}))
    db.session.commit()
    journal.clear(redis, [i for i in notes if i in moved])
    report.recovered_sent += sum(1 for i in notes if i in moved)
    report.recovered_queued += sum(
        1 for r in results if r.appeal_id in moved and r.outcome.status == Status.QUEUED
    )


class Dispatcher:
    """Hands due appeals to jobs, and remembers which job holds which appeal until a
    worker claims it.

    The memory is this process's: handing an appeal to a job writes nothing to the
    database, so the only writer of an appeal's ``job_id`` is the guarded claim. If
    Redis loses a job, the appeals it held are due and unheld again, and go to a new
    one; if this process restarts, due appeals may go to a second job, whose claim
    finds them taken and sends nothing.
    """

    def __init__(self) -> None:
        self.held: dict[str, dict[int, str]] = {DELIVER: {}, CONFIRM: {}, RECEIPT: {}}
        self.receipts = receipts.Watch()

    def hand_out(self, func: str, rows: list[tuple[int, str]]) -> tuple[int, int]:
        """Give every due (id, campaign) whose job is gone or never was to a new job,
        one campaign per batch; returns (appeals, jobs)."""
        held = self.held[func]
        due = {appeal_id for appeal_id, _ in rows}
        for appeal_id in [i for i in held if i not in due]:
            del held[appeal_id]  # claimed, sent, or steered away since
        waiting = waiting_jobs(set(held.values()))
        by_campaign: dict[str, list[int]] = {}
        for appeal_id, campaign in rows:
            if held.get(appeal_id) not in waiting:
                by_campaign.setdefault(campaign, []).append(appeal_id)
        size = int(current_app.config["DELIVERY_BATCH_SIZE"])
        jobs = [
            (new_job_id(), ids[start : start + size])
            for ids in by_campaign.values()
            for start in range(0, len(ids), size)
        ]
        enqueue_many(QUEUE_OF[func], func, jobs)
        for job_id, ids in jobs:
            held.update(dict.fromkeys(ids, job_id))
        return sum(len(ids) for _, ids in jobs), len(jobs)

    def dispatch_due(self, report: Report) -> None:
        """Hand every due appeal that no live job holds to a new one, except those whose
        sending is paused (:mod:`campaign.sending`): they wait, queued, until resumed."""
        switches = sending.read()
        if switches.everything_paused:
            return
        query = (
            db.select(Appeal.id, Appeal.campaign)
            .where(
                text(DUE),
                or_(Appeal.next_attempt_at.is_(None), Appeal.next_attempt_at <= utcnow()),
            )
            .order_by(Appeal.id)
            .limit(DISPATCH_LIMIT)
        )
        if switches.paused:
            query = query.where(Appeal.campaign.not_in(sorted(switches.paused)))
        # Campaigns that send digests (campaign.digests): their queued appeals wait for
        # the digest. Usually there are none, and this costs a snapshot read.
        modes = snapshots.delivery_modes()
        if modes:
            query = query.where(Appeal.campaign.not_in(sorted(modes)))
        rows = db.session.execute(query).all()
        if modes:
            rows += digests.one_by_one(modes, switches.paused, utcnow(), DISPATCH_LIMIT)
        # Appeals bound for a target address that hard-bounced wait for a manager's
        # decision (campaign.bounces); a look at the small flags table per pass.
        rows = bounces.hold_flagged(rows, self.held[DELIVER])
        appeals, jobs = self.hand_out(DELIVER, [tuple(r) for r in rows])
        report.enqueued += appeals
        report.jobs += jobs

    def dispatch_confirmations(self, report: Report) -> None:
        """Hand every supporter still owed a mail (a link, or a notice) to a job."""
        due = or_(Appeal.next_attempt_at.is_(None), Appeal.next_attempt_at <= utcnow())
        links = db.select(Appeal.id, Appeal.campaign).where(text(UNMAILED), due)
        notices = db.select(Appeal.id, Appeal.campaign).where(text(NOTICE_DUE))
        rows = db.session.execute(links.union(notices).order_by("id").limit(DISPATCH_LIMIT)).all()
        report.confirmations += self.hand_out(CONFIRM, [tuple(r) for r in rows])[0]

    def dispatch_receipts(self, report: Report, lag: float = receipts.RECEIPT_LAG) -> None:
        """Hand every supporter owed a receipt to a job."""
        rows, read_up_to = self.receipts.due(lag)
        report.receipts += self.hand_out(RECEIPT, rows)[0]
        self.receipts.advance(read_up_to)

    def sweep(self) -> Report:
        """One whole pass: recovery, then dispatch. Safe to run in several processes at
        once: claims decide who sends."""
        report = Report()
        recover_abandoned(report)
        self.dispatch_due(report)
        self.dispatch_confirmations(report)
        self.dispatch_receipts(report, lag=0.0)  # one pass: every event it can see
        report.digests += len(digests.run_due())
        return report


def sweep() -> Report:
    """One whole pass of this application's dispatcher (``appeals dispatch --once``)."""
    dispatcher: Dispatcher = current_app.extensions.setdefault("dispatcher", Dispatcher())
    return dispatcher.sweep()


HEARTBEAT_KEY = "appeals:dispatcher:heartbeat"
"""When the dispatcher last finished a pass (Unix time), read by :mod:`campaign.doctor`."""


def run_forever(interval: float, window: float) -> None:
    """Dispatch as appeals become due; recover every ``interval`` seconds."""
    log = current_app.logger
    alarm = Alarm(rq.connection())
    dispatcher = Dispatcher()
    last_recovery = last_retention = last_digest = 0.0
    follow_up = False
    while True:
        started = time.monotonic()
        report = Report()
        try:
            if started - last_recovery >= interval:
                recover_abandoned(report)
                last_recovery = started
            if started - last_retention >= RETENTION_INTERVAL:
                last_retention = started
                log.info("retention: %s", apply_retention())
            if started - last_digest >= digests.CHECK_SECONDS:
                last_digest = started
                for sent in digests.run_due():
                    log.info("digest: %s", sent)
            dispatcher.dispatch_due(report)
            dispatcher.dispatch_confirmations(report)
            dispatcher.dispatch_receipts(report)
            rq.connection().set(HEARTBEAT_KEY, time.time())  # for flask doctor
        except Exception:  # noqa: BLE001 - a dispatcher that dies dispatches nothing
            db.session.rollback()
            log.exception("dispatch failed; trying again")
        else:
            if report.recovered_queued or report.recovered_sent:
                log.warning(
                    "recovered %d appeals from the journal, queued %d again",
                    report.recovered_sent,
                    report.recovered_queued,
                )
        db.session.commit()  # end the read transaction: the next pass sees new rows
        # Gather for a window, so that under load a pass finds a batch; then sleep
        # until something is due, or until it is time to look for lost work.
        time.sleep(max(0.0, window - (time.monotonic() - started)))
        if follow_up:
            # A window after a wake-up, one more pass: it finds the appeals confirmed
            # just after that wake-up, whose own wake-up was coalesced into it.
            follow_up = False
            continue
        try:
            follow_up = alarm.wait(interval - (time.monotonic() - started))
        except Exception:  # noqa: BLE001 - Redis down: look again after the interval
            log.warning("broker unavailable; dispatching from the database alone")
            time.sleep(interval)
            try:
                alarm.close()
                alarm = Alarm(rq.connection())
            except Exception:  # noqa: BLE001, S110 - still down: the next turn tries again
                pass
