"""Managers steer the send queue: hold, release, retry, cancel, one appeal or all."""

from __future__ import annotations

import pytest

from campaign.db import db
from campaign.delivery.dispatcher import sweep
from campaign.models import Appeal, AppealEvent, CampaignOption, Role, Status
from campaign.users import create_user
from helpers import APPEALS_URL, csrf_token, supporter

PASSWORD = "correct horse battery staple"


@pytest.fixture
def manager(app, client):
    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, PASSWORD)
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    client.post(
        "/login", data={"csrf_token": token, "email": "manager@example.org", "password": PASSWORD}
    )
    return client


def _steer(client, action, appeal_id):
    token = csrf_token(client.get("/manage").get_data(as_text=True))
    return client.post(
        "/manage/steer", data={"csrf_token": token, "action": action, "appeal_id": str(appeal_id)}
    )


def _status(app, email):
    with app.app_context():
        return db.session.scalar(db.select(Appeal.status).filter_by(email=email))


def _id(app, email):
    with app.app_context():
        return db.session.scalar(db.select(Appeal.id).filter_by(email=email))


def _run(app, work):
    with app.app_context():
        sweep()
        db.session.remove()
    work()


def test_hold_stops_an_appeal_and_release_sends_it(app, manager, smtp, redis, work):
    manager.post(APPEALS_URL, json=supporter(email="held@example.org"))
    redis.flushdb()  # its job is gone: only the sweeper could send it now
    reply = _steer(manager, "hold", _id(app, "held@example.org"))
    assert reply.status_code == 302
    assert _status(app, "held@example.org") == Status.HELD
    _run(app, work)
    assert smtp.received == []
    page = manager.get("/manage").get_data(as_text=True)
    assert "hold by manager@example.org" in page

    _steer(manager, "release", _id(app, "held@example.org"))
    _run(app, work)
    assert _status(app, "held@example.org") == Status.SENT
    assert len(smtp.received) == 1
    with app.app_context():
        reasons = db.session.scalars(db.select(AppealEvent.reason)).all()
    assert "hold by manager@example.org" in reasons
    assert "release by manager@example.org" in reasons


def test_retry_a_failed_appeal(app, manager, smtp, work):
    smtp.handler.rcpt_replies = {"ministro@mju.es": "550 5.1.1 mailbox unavailable"}
    manager.post(APPEALS_URL, json=supporter(email="bounced@example.org"))
    work()
    assert _status(app, "bounced@example.org") == Status.FAILED
    smtp.handler.rcpt_replies = {}  # the ministry fixed its mailbox
    _steer(manager, "retry", _id(app, "bounced@example.org"))
    _run(app, work)
    assert _status(app, "bounced@example.org") == Status.SENT


def test_cancel_means_never_sent(app, manager, smtp, redis, work):
    manager.post(APPEALS_URL, json=supporter(email="cancel@example.org"))
    _steer(manager, "cancel", _id(app, "cancel@example.org"))
    _run(app, work)  # its job still runs, and claims nothing
    assert _status(app, "cancel@example.org") == Status.CANCELLED
    assert smtp.received == []


def test_bulk_hold_at_two_in_the_morning(app, manager, smtp, redis, work):
    for i in range(5):
        manager.post(APPEALS_URL, json=supporter(email=f"s{i}@example.org"))
    reply = _steer(manager, "hold", "all")
    assert reply.status_code == 302
    assert "Hold: 5 appeals." in manager.get("/manage").get_data(as_text=True)
    _run(app, work)
    assert smtp.received == []
    _steer(manager, "release", "all")
    _run(app, work)
    assert len(smtp.received) == 5


def test_an_action_that_no_longer_applies_changes_nothing(app, manager, smtp, work):
    manager.post(APPEALS_URL, json=supporter(email="sent@example.org"))
    work()
    _steer(manager, "cancel", _id(app, "sent@example.org"))
    assert _status(app, "sent@example.org") == Status.SENT
    assert "has moved on" in manager.get("/manage").get_data(as_text=True)


def test_steering_needs_a_manager_and_a_csrfcsrf_token(app, client, manager):
    manager.post(APPEALS_URL, json=supporter(email="x@example.org"))
    appeal_id = _id(app, "x@example.org")
    reply = manager.post("/manage/steer", data={"action": "cancel", "appeal_id": appeal_id})
    assert _status(app, "x@example.org") == Status.QUEUED
    assert reply.status_code == 400  # no CSRF token: refused before the view runs
    manager.post("/logout", data={"csrf_token": csrf_token(manager.get("/manage").get_data(True))})
    anonymous = app.test_client()
    reply = anonymous.post("/manage/steer", data={"action": "cancel", "appeal_id": appeal_id})
    assert reply.status_code == 400
    # With a token from a public page, an anonymous visitor is sent to log in.
    token = csrf_token(anonymous.get("/login").get_data(as_text=True))
    reply = anonymous.post(
        "/manage/steer", data={"csrf_token": token, "action": "cancel", "appeal_id": appeal_id}
    )
    assert reply.status_code == 302
    assert reply.headers["Location"].startswith("/login")
    assert _status(app, "x@example.org") == Status.QUEUED
