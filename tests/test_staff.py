"""Staff sessions that end, users an admin can stop, sign-ins that can't be guessed at,
and an audit log of who did what. Real Redis (the limits), SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest

from campaign.db import db
from campaign.models import AuditEvent, Role, User
from campaign.users import create_user
from helpers import APPEALS_URL, csrf_token, form_fields, log_in, submit, supporter

ADMIN = "admin@example.org"
MANAGER = "manager@example.org"
PASSWORD = "correct horse battery staple"


def _user(app: Any, email: str, role: str = Role.MANAGER, **kw: Any) -> None:
    with app.app_context():
        create_user(email, role, PASSWORD, **kw)


def _audit(app: Any) -> list[tuple[str, str, str | None]]:
    with app.app_context():
        return [
            (e.actor, e.action, e.detail)
            for e in db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id))
        ]


def _cookie(client: Any) -> str:
    return client.get_cookie("session").value


def _with_cookie(app: Any, value: str) -> Any:
    """Another browser, holding a copy of someone's session cookie."""
    other = app.test_client()
    other.set_cookie("session", value)
    return other


def _log_out(client: Any) -> None:
    token = csrf_token(client.get("/manage").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302


# --- sessions ----------------------------------------------------------------------------


def test_logging_out_ends_the_session_even_for_a_copied_cookie(app, client):
    _user(app, ADMIN, Role.ADMIN)
    assert log_in(client, ADMIN, PASSWORD).status_code == 302
    copied = _cookie(client)
    assert _with_cookie(app, copied).get("/admin").status_code == 200
    _log_out(client)
    assert _with_cookie(app, copied).get("/admin").status_code == 302  # to the log-in page
    assert client.get("/admin").status_code == 302


def test_a_new_password_ends_every_other_session(app, client):
    _user(app, MANAGER)
    log_in(client, MANAGER, PASSWORD)
    elsewhere = app.test_client()
    log_in(elsewhere, MANAGER, PASSWORD)
    assert elsewhere.get("/manage").status_code == 200
    reply = submit(
        client, "/account/password", "", "save",
        current=PASSWORD, new="another long password", repeat="another long password",
    )  # fmt: skip
    assert reply.status_code == 302
    assert client.get("/manage").status_code == 200  # this session goes on
    assert elsewhere.get("/manage").status_code == 302  # the other one ended
    assert log_in(app.test_client(), MANAGER, "another long password").status_code == 302


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"current": "wrong password!!", "new": "x" * 12, "repeat": "x" * 12}, "not your current"),
        ({"current": PASSWORD, "new": "x" * 12, "repeat": "y" * 12}, "differ"),
        ({"current": PASSWORD, "new": "short", "repeat": "short"}, "Use 12 to 200 characters"),
    ],
)
def test_a_bad_password_change_changes_nothing(app, client, fields, error):
    _user(app, MANAGER)
    log_in(client, MANAGER, PASSWORD)
    reply = submit(client, "/account/password", "", "save", **fields)
    assert reply.status_code == 422
    assert error in reply.get_data(as_text=True)
    assert log_in(app.test_client(), MANAGER, PASSWORD).status_code == 302


def test_an_idle_session_ends_and_so_does_an_old_one(app, client):
    _user(app, MANAGER)
    app.config.update(SESSION_IDLE_MINUTES=1 / 60, SESSION_MAX_HOURS=1)  # one second idle
    log_in(client, MANAGER, PASSWORD)
    assert client.get("/manage").status_code == 200
    time.sleep(1.2)
    reply = client.get("/manage")
    assert reply.status_code == 302 and reply.headers["Location"].startswith("/login")

    app.config.update(SESSION_IDLE_MINUTES=30, SESSION_MAX_HOURS=2 / 3600)  # two seconds in all
    log_in(client, MANAGER, PASSWORD)
    for _ in range(3):  # busy the whole time: still ends at the absolute limit
        assert client.get("/manage").status_code == 200
        time.sleep(0.5)
    time.sleep(0.6)
    assert client.get("/manage").status_code == 302


def test_a_disabled_user_is_out_at_once_and_can_be_let_back_in(app, client):
    _user(app, ADMIN, Role.ADMIN)
    _user(app, MANAGER)
    log_in(client, ADMIN, PASSWORD)
    manager = app.test_client()
    log_in(manager, MANAGER, PASSWORD)
    with app.app_context():
        manager_id = db.session.scalar(db.select(User.id).filter_by(email=MANAGER))
    page = client.get("/admin/users").get_data(as_text=True)
    action = f"/admin/users/{manager_id}"
    data = form_fields(page, action)
    assert client.post(action, data={**data, "action": "disable"}).status_code == 302
    assert manager.get("/manage").status_code == 302
    assert log_in(app.test_client(), MANAGER, PASSWORD).status_code == 401
    assert client.post(action, data={**data, "action": "enable"}).status_code == 302
    assert log_in(app.test_client(), MANAGER, PASSWORD).status_code == 302
    # An admin cannot lock themselves out.
    with app.app_context():
        admin_id = db.session.scalar(db.select(User.id).filter_by(email=ADMIN))
    client.post(f"/admin/users/{admin_id}", data={**data, "action": "disable"})
    assert client.get("/admin").status_code == 200


def test_a_reset_password_is_shown_once_and_must_be_replaced(app, client):
    _user(app, ADMIN, Role.ADMIN)
    _user(app, MANAGER)
    log_in(client, ADMIN, PASSWORD)
    with app.app_context():
        manager_id = db.session.scalar(db.select(User.id).filter_by(email=MANAGER))
    page = client.get("/admin/users").get_data(as_text=True)
    data = form_fields(page, f"/admin/users/{manager_id}")
    reply = client.post(f"/admin/users/{manager_id}", data={**data, "action": "reset"})
    html = reply.get_data(as_text=True)
    password = html.split("<code>")[1].split("</code>")[0]
    assert len(password) >= 12
    assert password not in client.get("/admin/users").get_data(as_text=True)
    assert log_in(app.test_client(), MANAGER, PASSWORD).status_code == 401
    manager = app.test_client()
    assert log_in(manager, MANAGER, password).status_code == 302
    assert manager.get("/manage").headers["Location"] == "/account/password"
    assert manager.get("/account/password").status_code == 200


def test_the_first_admins_printed_password_must_be_changed(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "ensure-admin"])
    assert result.exit_code == 0
    password = result.output.split("with password ")[1].split()[0]
    client = app.test_client()
    assert log_in(client, "admin@example.org", password).status_code == 302
    for page in ("/manage", "/admin", "/admin/users"):
        reply = client.get(page)
        assert reply.status_code == 302 and reply.headers["Location"] == "/account/password"
    assert "was chosen for you" in client.get("/account/password").get_data(as_text=True)
    reply = submit(
        client, "/account/password", "", "save",
        current=password, new="my own long password", repeat="my own long password",
    )  # fmt: skip
    assert reply.status_code == 302
    assert client.get("/admin").status_code == 200


def test_the_cli_sets_a_password_and_ends_the_users_sessions(app, client):
    _user(app, MANAGER)
    log_in(client, MANAGER, PASSWORD)
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "set-password", MANAGER], env={"NEW_USER_PASSWORD": "set by the operator"}
    )
    assert result.exit_code == 0, result.output
    assert "set by the operator" not in result.output
    assert client.get("/manage").status_code == 302
    assert log_in(app.test_client(), MANAGER, "set by the operator").status_code == 302
    result = runner.invoke(args=["users", "set-password", "nobody@example.org"])
    assert result.exit_code == 1 and "no user nobody@example.org" in result.output
    assert ("cli", "password set", MANAGER) in _audit(app)


# --- signing in --------------------------------------------------------------------------


def _attempt(app: Any, email: str, password: str = "wrong password!") -> Any:
    client = app.test_client()
    return log_in(client, email, password)


def test_sign_ins_are_throttled_per_account_the_same_whether_it_exists(app, redis):
    app.config["RATELIMIT_LOGIN_ACCOUNT"] = "3 per hour"
    _user(app, MANAGER)
    answers = {}
    for email in (MANAGER, "nobody@example.org"):
        replies = [_attempt(app, email) for _ in range(4)]
        answers[email] = [(r.status_code, r.get_data(as_text=True).count("Wrong")) for r in replies]
    assert answers[MANAGER] == answers["nobody@example.org"] == [(401, 1)] * 3 + [(429, 0)]
    # Now even the right password waits: the account is throttled, not the guesser.
    assert _attempt(app, MANAGER, PASSWORD).status_code == 429
    # Another account, from the same client, is not.
    _user(app, ADMIN, Role.ADMIN)
    assert _attempt(app, ADMIN, PASSWORD).status_code == 302


def test_successful_sign_ins_do_not_count_against_the_account(app, redis):
    app.config["RATELIMIT_LOGIN_ACCOUNT"] = "2 per hour"
    _user(app, MANAGER)
    for _ in range(4):
        assert _attempt(app, MANAGER, PASSWORD).status_code == 302


def test_sign_ins_are_throttled_per_client(app, redis):
    app.config["RATELIMIT_LOGIN"] = "3 per minute"
    replies = [_attempt(app, f"user{i}@example.org").status_code for i in range(4)]
    assert replies == [401, 401, 401, 429]


# --- the audit log -----------------------------------------------------------------------


def test_the_audit_log_records_who_did_what(app, client, smtp, work):
    _user(app, ADMIN, Role.ADMIN)
    _attempt(app, ADMIN)  # a failed sign-in
    log_in(client, ADMIN, PASSWORD)
    submit(client, "/admin", "/admin", "save", org_name="Another Section")
    client.post(APPEALS_URL, json=supporter(email="s@example.org"))
    page = client.get("/manage").get_data(as_text=True)
    token = csrf_token(page)
    for action in ("hold", "release", "cancel", "retry"):
        client.post(
            "/manage/steer", data={"csrf_token": token, "action": action, "appeal_id": "all"}
        )
    assert client.get("/manage/export.csv").status_code == 200
    log = _audit(app)
    assert log[0][:2] == (ADMIN, "sign-in failed")
    assert log[1][:2] == (ADMIN, "sign-in")
    assert (ADMIN, "relay settings", "org_name") in log
    assert [e[1] for e in log[3:8]] == ["hold", "release", "cancel", "retry", "export"]
    assert log[5] == (ADMIN, "cancel", "all: 1 moved")
    with app.app_context():
        assert all(e.client == "127.0.0.1" for e in db.session.scalars(db.select(AuditEvent)))
    page = client.get("/admin/audit").get_data(as_text=True)
    assert "sign-in failed" in page and "relay settings" in page
    # Managers don't read it.
    _user(app, MANAGER)
    manager = app.test_client()
    log_in(manager, MANAGER, PASSWORD)
    assert manager.get("/admin/audit").status_code == 403


def test_staff_pages_are_never_cached(app, client):
    _user(app, ADMIN, Role.ADMIN)
    log_in(client, ADMIN, PASSWORD)
    for page in ("/manage", "/admin", "/admin/users", "/admin/audit", "/login", "/manage/mail"):
        assert client.get(page).headers["Cache-Control"] == "no-store", page
