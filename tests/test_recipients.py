"""Each recipient's copy has its own state: a retry goes only to the copies still pending,
as the same message, and an appeal is sent only when every copy is settled. Real SMTP
server on loopback, real RQ on Redis, SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaign.db import db
from campaign.models import Appeal, AppealEvent, CampaignOption, Delivery, Diplomat, Recipient
from campaign.models import Status as S
from helpers import APPEALS_URL, supporter

MINISTER = "ministro@mju.es"
EMBASSY = "emb.londres@maec.test"


@pytest.fixture
def embassy(app):
    """Confirmation off, and an embassy in the supporter's country: To the Minister, Cc it."""
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.add(
            Diplomat(target_state="ES", country="GB", name="Embassy of Spain", email=EMBASSY)
        )
        db.session.commit()


def _appeal(app) -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        db.session.expunge(appeal)
        return appeal


def _copies(app) -> dict[str, Recipient]:
    with app.app_context():
        rows = db.session.scalars(db.select(Recipient)).all()
        db.session.expunge_all()
        return {r.address: r for r in rows}


def _time_passes(app) -> None:
    """Every retry becomes due now."""
    with app.app_context():
        db.session.execute(db.update(Appeal).values(next_attempt_at=None))
        db.session.execute(db.update(Recipient).values(next_attempt_at=None))
        db.session.commit()


def test_to_refused_while_the_cc_is_accepted(app, client, smtp, work, embassy):
    smtp.handler.rcpt_replies = {MINISTER: "451 4.3.0 Temporary lookup failure"}
    client.post(APPEALS_URL, json=supporter())
    work()

    # The embassy has its copy; the Minister has not, so the appeal is not sent.
    [first] = smtp.received
    assert first.rcpt_tos == [EMBASSY]
    appeal = _appeal(app)
    assert appeal.status == S.RETRYING
    assert appeal.status_reason == f"{MINISTER}: 451 4.3.0 Temporary lookup failure"
    assert appeal.sent_at is None
    copies = _copies(app)
    assert copies[MINISTER].status == Delivery.PENDING
    assert copies[MINISTER].attempts == 1
    assert copies[MINISTER].last_reply == "451 4.3.0 Temporary lookup failure"
    assert copies[EMBASSY].status == Delivery.ACCEPTED
    assert copies[EMBASSY].accepted_at is not None
    assert copies[EMBASSY].message_id == first.message["Message-ID"]

    # The retry goes to the Minister alone, and it is the same message: same headers
    # (To and Cc name both), same Message-ID, same bytes, as an MTA would resend it.
    smtp.handler.rcpt_replies = {}
    _time_passes(app)
    work()
    [_, retry] = smtp.received
    assert retry.rcpt_tos == [MINISTER]
    assert retry.data == first.data
    assert [a.addr_spec for a in retry.message["To"].addresses] == [MINISTER]
    assert [a.addr_spec for a in retry.message["Cc"].addresses] == [EMBASSY]

    appeal = _appeal(app)
    assert appeal.status == S.SENT
    assert appeal.status_reason is None
    copies = _copies(app)
    assert {a: c.status for a, c in copies.items()} == {
        MINISTER: Delivery.ACCEPTED,
        EMBASSY: Delivery.ACCEPTED,
    }
    assert (copies[MINISTER].attempts, copies[EMBASSY].attempts) == (2, 1)

    # Nothing more goes anywhere: the embassy never got a second copy.
    _time_passes(app)
    work()
    assert len(smtp.received) == 2


def test_a_copy_refused_for_good_leaves_the_appeal_sent_with_a_note(
    app, client, smtp, work, embassy
):
    smtp.handler.rcpt_replies = {EMBASSY: "550 5.1.1 no such user"}
    client.post(APPEALS_URL, json=supporter())
    work()
    [mail] = smtp.received
    assert mail.rcpt_tos == [MINISTER]
    appeal = _appeal(app)
    assert appeal.status == S.SENT
    assert appeal.status_reason == f"copy to {EMBASSY} refused: 550 5.1.1 no such user"
    copies = _copies(app)
    assert copies[EMBASSY].status == Delivery.FAILED
    assert copies[MINISTER].status == Delivery.ACCEPTED


def test_the_main_addressee_refused_for_good_fails_the_appeal(app, client, smtp, work, embassy):
    smtp.handler.rcpt_replies = {MINISTER: "550 5.1.1 mailbox unavailable"}
    client.post(APPEALS_URL, json=supporter())
    work()
    appeal = _appeal(app)
    assert appeal.status == S.FAILED
    assert appeal.status_reason == f"{MINISTER}: 550 5.1.1 mailbox unavailable"
    # The embassy's copy went in the same transaction; it is recorded as such.
    assert _copies(app)[EMBASSY].status == Delivery.ACCEPTED


def test_a_copy_refused_for_now_six_times_is_refused_for_good(app, client, smtp, work, embassy):
    smtp.handler.rcpt_replies = {EMBASSY: "452 4.2.2 mailbox full"}
    client.post(APPEALS_URL, json=supporter())
    work()
    assert _appeal(app).status == S.RETRYING  # the Minister has it; the embassy does not
    for _ in range(5):
        _time_passes(app)
        work()
    copies = _copies(app)
    assert copies[EMBASSY].status == Delivery.FAILED
    assert copies[EMBASSY].attempts == 6
    appeal = _appeal(app)
    assert appeal.status == S.SENT
    assert appeal.status_reason == f"copy to {EMBASSY} refused: 452 4.2.2 mailbox full"
    # The Minister got one copy; the embassy was asked six times and never took one.
    assert [m.rcpt_tos for m in smtp.received] == [[MINISTER]]


def test_a_slow_embassy_does_not_hold_back_the_ministers_copy(
    app, client, smtp, redis, work, embassy
):
    app.config.update(PACING_ENABLED=True)
    # The embassy's domain has spent its tokens (and earns none); the ministry's has plenty.
    redis.hset("pace:domain:maec.test", mapping={"tokens": 0, "ts": 1e12})
    client.post(APPEALS_URL, json=supporter())
    work()
    [mail] = smtp.received
    assert mail.rcpt_tos == [MINISTER]
    appeal = _appeal(app)
    assert appeal.status == S.QUEUED  # waiting for the embassy's turn, not failing
    assert appeal.next_attempt_at is not None
    assert appeal.attempts == 1
    copies = _copies(app)
    assert copies[MINISTER].status == Delivery.ACCEPTED
    assert copies[EMBASSY].status == Delivery.PENDING
    assert copies[EMBASSY].attempts == 0  # waiting is not a try
    assert copies[EMBASSY].next_attempt_at == appeal.next_attempt_at
    with app.app_context():
        reasons = db.session.scalars(db.select(AppealEvent.reason)).all()
    assert "paced: waiting for its turn" in reasons

    redis.delete("pace:domain:maec.test")
    _time_passes(app)
    work()
    assert [m.rcpt_tos for m in smtp.received] == [[MINISTER], [EMBASSY]]
    assert _appeal(app).status == S.SENT


def test_the_status_api_and_the_managers_page_show_each_copy(app, client, smtp, work, embassy):
    from campaign.models import Role
    from campaign.users import create_user
    from helpers import log_in

    smtp.handler.rcpt_replies = {MINISTER: "451 4.7.1 greylisted"}
    reply = client.post(APPEALS_URL, json=supporter())
    with app.app_context():
        public_id = db.session.scalar(db.select(Appeal.public_id))
    status_url = f"/api/v1/appeals/{public_id}"
    assert client.get(status_url).json["recipients"] == []  # decided on the first try
    work()
    body = client.get(status_url).json
    assert body["status"] == S.RETRYING
    by_address = {r["address"]: r for r in body["recipients"]}
    assert by_address[MINISTER] == {
        "role": "to",
        "address": MINISTER,
        "status": "pending",
        "attempts": 1,
        "last_reply": "451 4.7.1 greylisted",
        "accepted_at": None,
    }
    assert by_address[EMBASSY]["status"] == "accepted"
    assert datetime.fromisoformat(by_address[EMBASSY]["accepted_at"]) <= datetime.now(UTC)
    assert "ana@example.org" not in reply.get_data(as_text=True) + str(body)

    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, "correct horse battery staple")
        appeal_id = db.session.scalar(db.select(Appeal.id))
    log_in(client, "manager@example.org", "correct horse battery staple")
    page = client.get(f"/manage/appeals/{appeal_id}").get_data(as_text=True)
    assert f'<tr data-address="{MINISTER}"><td>to</td>' in page
    assert "451 4.7.1 greylisted" in page
    assert f'<tr data-address="{EMBASSY}"><td>cc</td>' in page
    dashboard = client.get("/manage").get_data(as_text=True)
    assert f'data-address="{MINISTER}" data-status="pending"' in dashboard
    assert f'data-address="{EMBASSY}" data-status="accepted"' in dashboard
