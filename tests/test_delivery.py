"""The relay's replies, classified: real SMTP server on loopback, real RQ on Redis."""

from __future__ import annotations

import pytest
from faults import lost_and_duplicated

from campaign.db import db
from campaign.delivery.dispatcher import sweep
from campaign.models import Appeal, CampaignOption, Delivery, Diplomat, Recipient, Status
from helpers import APPEALS_URL, supporter


@pytest.fixture
def no_confirmation(app):
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()


def _appeal(app, email="ana@example.org") -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email=email))
        db.session.expunge(appeal)
        return appeal


def _copies(app, appeal_id) -> dict[str, Recipient]:
    with app.app_context():
        rows = db.session.scalars(db.select(Recipient).filter_by(appeal_id=appeal_id)).all()
        db.session.expunge_all()
        return {r.address: r for r in rows}


def _send(client, n=1):
    for i in range(n):
        assert (
            client.post(APPEALS_URL, json=supporter(email=f"s{i}@example.org")).status_code == 202
        )


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "plain"])
@pytest.mark.parametrize(
    ("reply", "status", "permanent"),
    [
        ("550 5.1.1 <ministro@mju.es>: mailbox unavailable", Status.FAILED, True),
        ("451 4.3.0 Temporary lookup failure", Status.RETRYING, False),
        ("452 4.5.3 Too many recipients", Status.RETRYING, False),
        ("450 4.2.0 Mailbox busy", Status.RETRYING, False),
    ],
)
def test_rcpt_reply_is_classified(
    app, client, smtp, work, no_confirmation, pipelining, reply, status, permanent
):
    smtp.handler.pipelining = pipelining
    smtp.handler.rcpt_replies = {"ministro@mju.es": reply}
    _send(client)
    work()
    appeal = _appeal(app, "s0@example.org")
    assert appeal.status == status
    assert reply.split(" ", 1)[0] in appeal.status_reason
    assert reply.split(" ", 2)[2] in appeal.status_reason  # the relay's own words
    assert (appeal.next_attempt_at is None) == permanent
    assert smtp.received == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "plain"])
def test_one_refused_copy_does_not_stop_the_others(
    app, client, smtp, work, no_confirmation, pipelining
):
    smtp.handler.pipelining = pipelining
    with app.app_context():
        db.session.add_all(
            [
                Diplomat(target_state="ES", country="GB", name="Embassy", email="emb@maec.test"),
                Diplomat(target_state="ES", country="GB", name="Consulate", email="con@maec.test"),
            ]
        )
        db.session.commit()
    smtp.handler.rcpt_replies = {"con@maec.test": "550 5.1.1 no such user"}
    _send(client)
    work()
    appeal = _appeal(app, "s0@example.org")
    assert appeal.status == Status.SENT
    [mail] = smtp.received
    assert sorted(mail.rcpt_tos) == ["emb@maec.test", "ministro@mju.es"]
    copies = _copies(app, appeal.id)
    assert copies["con@maec.test"].status == Delivery.FAILED
    assert copies["con@maec.test"].last_reply == "550 5.1.1 no such user"
    assert copies["ministro@mju.es"].status == Delivery.ACCEPTED
    assert copies["ministro@mju.es"].last_reply.startswith("250 ")
    assert appeal.status_reason == "copy to con@maec.test refused: 550 5.1.1 no such user"


def test_the_backoff_schedule_and_failure_after_six_transient_errors(
    app, client, smtp, work, no_confirmation
):
    """451 every time: tries 2-6 wait 30 s, 1, 5, 15 and 30 min; the sixth refusal is final."""
    from campaign.db import utcnow

    smtp.handler.rcpt_replies = {"ministro@mju.es": "451 4.3.0 Try again later"}
    _send(client)
    waits = []
    for attempt in range(1, 7):
        before = utcnow()
        work()
        appeal = _appeal(app, "s0@example.org")
        copy = _copies(app, appeal.id)["ministro@mju.es"]
        assert copy.attempts == attempt
        if attempt < 6:
            assert appeal.status == Status.RETRYING
            assert copy.status == Delivery.PENDING
            waits.append(appeal.next_attempt_at - before)
            assert copy.next_attempt_at == appeal.next_attempt_at
            with app.app_context():  # time passes: the retry is due
                db.session.execute(db.update(Appeal).values(next_attempt_at=None))
                db.session.commit()
    assert [round(w.total_seconds()) for w in waits] == [30, 60, 300, 900, 1800]
    assert appeal.status == Status.FAILED
    assert appeal.status_reason == "ministro@mju.es: 451 4.3.0 Try again later"
    assert copy.status == Delivery.FAILED
    assert appeal.next_attempt_at is None
    assert smtp.received == []


def test_data_421_reports_the_relays_words_and_retries(app, client, smtp, work, no_confirmation):
    # Flask-Mail would raise SMTPServerDisconnected from quit() and hide this reply.
    smtp.handler.data_replies = ["421 4.4.2 closing: shutting down"] * 2
    _send(client)
    work()
    appeal = _appeal(app, "s0@example.org")
    assert appeal.status == Status.RETRYING
    assert "421 4.4.2 closing: shutting down" in appeal.status_reason
    assert appeal.attempts == 0  # the relay's trouble, not the appeal's


def test_a_single_421_is_survived_by_reconnecting(app, client, smtp, work, no_confirmation):
    smtp.handler.data_replies = ["421 4.7.0 try again on a new connection"]
    _send(client)
    work()
    assert _appeal(app, "s0@example.org").status == Status.SENT
    assert len(smtp.received) == 1


def test_data_550_fails_only_that_appeal(app, client, smtp, work, no_confirmation):
    smtp.handler.data_replies = ["554 5.7.1 message rejected as spam"]
    _send(client, 3)
    work()
    statuses = sorted(_appeal(app, f"s{i}@example.org").status for i in range(3))
    assert statuses == [Status.FAILED, Status.SENT, Status.SENT]
    assert len(smtp.received) == 2


def test_relay_per_connection_limit_reconnects(app, client, smtp, work, no_confirmation):
    smtp.handler.max_per_connection = 3
    _send(client, 10)
    with app.app_context():
        db.session.execute(db.update(Appeal).values(job_id=None))
        db.session.commit()
        sweep()  # one batch of all ten
    work()
    expected = {f"s{i}@example.org" for i in range(10)}
    assert lost_and_duplicated(expected, smtp.received) == (0, 0)


def test_relay_down_then_back(app, client, smtp, work, no_confirmation, tmp_path):
    from conftest import free_port

    with app.app_context():
        from campaign import settings

        dead = free_port()  # nothing listens here
        settings.save({"relay_port": dead}, by="test")
    _send(client, 3)
    work()
    with app.app_context():
        rows = db.session.scalars(db.select(Appeal)).all()
        assert {a.status for a in rows} == {Status.RETRYING}
        assert {a.status_reason for a in rows} == {
            "relay unavailable: ConnectionRefusedError: [Errno 111] Connection refused"
        }
        assert all(a.attempts == 0 for a in rows)
        # Kept to the second: the batch's appeals moved together, not one statement each.
        assert len({a.next_attempt_at for a in rows}) <= 2
        # The relay comes back; time passes until the retry is due.
        settings.save({"relay_port": None}, by="test")
        db.session.execute(db.update(Appeal).values(next_attempt_at=None))
        db.session.commit()
        report = sweep()
        assert report.enqueued == 3
    work()
    expected = {f"s{i}@example.org" for i in range(3)}
    assert lost_and_duplicated(expected, smtp.received) == (0, 0)


def test_running_a_job_twice_sends_once(app, client, smtp, work, no_confirmation):
    from campaign.delivery.queue import rq

    _send(client)
    appeal = _appeal(app, "s0@example.org")
    with app.app_context():
        queue = rq.get_queue("appeals")
        queue.enqueue("campaign.delivery.jobs.deliver_appeals", [appeal.id])  # a duplicate job
    work()
    assert len(smtp.received) == 1


def test_synthetic_appeals_refuse_a_relay_that_is_not_on_loopback(app):
    from campaign import settings
    from campaign.models import Appeal

    with app.app_context():
        settings.save({"relay_host": "smtp.example.org"}, by="test")
    result = app.test_cli_runner().invoke(
        args=["appeals", "synthetic", "--campaign", "pavlov-extradition", "--count", "5"]
    )
    assert result.exit_code != 0
    assert "not on loopback" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Appeal)) == 0
    with app.app_context():
        settings.save({"relay_host": None}, by="test")
    result = app.test_cli_runner().invoke(
        args=["appeals", "synthetic", "--campaign", "pavlov-extradition", "--count", "5"]
    )
    assert result.exit_code == 0, result.output


def test_a_letter_that_cannot_be_rendered_fails_alone(app, smtp, work):
    from campaign.synthetic import create_synthetic

    with app.app_context():
        create_synthetic("pavlov-extradition", 3)
        broken = db.session.scalar(db.select(Appeal).order_by(Appeal.id))
        broken.language = "ru"  # no Russian letter: as if a template went missing
        db.session.commit()
        sweep()
    work()
    with app.app_context():
        rows = db.session.scalars(db.select(Appeal).order_by(Appeal.id)).all()
        assert [a.status for a in rows] == [Status.FAILED, Status.SENT, Status.SENT]
        assert "could not be rendered" in rows[0].status_reason
    assert len(smtp.received) == 2


def test_an_appeal_whose_worker_keeps_dying_fails_visibly(app):
    from datetime import timedelta

    from campaign.db import utcnow
    from campaign.synthetic import create_synthetic

    app.config["SENDING_LEASE_SECONDS"] = 1
    with app.app_context():
        create_synthetic("pavlov-extradition", 2)
        first, second = db.session.scalars(db.select(Appeal).order_by(Appeal.id)).all()
        for appeal, attempts in ((first, 6), (second, 2)):
            appeal.status, appeal.attempts = Status.SENDING, attempts
            appeal.updated_at = utcnow() - timedelta(minutes=10)
        db.session.commit()
        report = sweep()
        db.session.expire_all()
        assert (first.status, second.status) == (Status.FAILED, Status.QUEUED)
        assert "stopped while sending it 6 times" in first.status_reason
        assert report.recovered_queued == 1


def test_a_lost_confirmation_job_is_sent_again(app, client, smtp, redis, work):
    client.post(APPEALS_URL, json=supporter(email="waiting@example.org"))
    with app.app_context():
        assert sweep().confirmations == 1
        redis.flushdb()  # the confirmation job is gone with Redis
        assert sweep().confirmations == 1
        assert sweep().confirmations == 0  # its job is live now: not enqueued twice
    work()
    assert [m.rcpt_tos for m in smtp.received] == [["waiting@example.org"]]
    with app.app_context():
        assert sweep().confirmations == 0  # sent: nothing more to do
