"""The relay's secrets stay put: a password goes only to the relay it was given for,
never in the clear over the network, and the admin's relay checks can't scan it.
Real SMTP servers on loopback that record every log-in they see."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from campaign import settings
from campaign.db import db
from campaign.delivery.transport import RelayConnection, SessionLost
from campaign.exceptions import RelayRefused
from campaign.models import CampaignOption, Role
from campaign.settings import RelaySettings
from campaign.users import create_user
from conftest import SinkHandler, free_port
from helpers import APPEALS_URL, log_in, submit, supporter

ADMIN = "admin@example.org"
PASSWORD = "correct horse battery staple"
RELAY_PASSWORD = "the relay's own secret"


@dataclass
class AuthRelay:
    port: int
    handler: SinkHandler
    logins: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def relays() -> Iterator[list[AuthRelay]]:
    """Two relays on loopback that offer AUTH (in the clear: loopback is allowed) and
    record every user name and password anyone sends them."""
    made: list[tuple[Controller, AuthRelay]] = []

    def build() -> AuthRelay:
        relay = AuthRelay(free_port(), SinkHandler())

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
            assert isinstance(data, LoginPassword)
            relay.logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=True)

        controller = Controller(
            relay.handler,
            hostname="127.0.0.1",
            port=relay.port,
            authenticator=authenticator,
            auth_require_tls=False,
        )
        controller.start()
        made.append((controller, relay))
        return relay

    try:
        yield [build(), build()]
    finally:
        for controller, _ in made:
            controller.stop()


@pytest.fixture
def admin(app, client):
    with app.app_context():
        create_user(ADMIN, Role.ADMIN, PASSWORD)
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()
    log_in(client, ADMIN, PASSWORD)
    return client


def _relay_form(admin: Any, **changes: Any) -> Any:
    return submit(admin, "/admin", "/admin", "save", **changes)


def test_the_password_stays_with_the_relay_it_was_given_for(app, admin, work, relays):
    first, second = relays
    _relay_form(
        admin, relay_port=first.port, relay_username="appeals", relay_password=RELAY_PASSWORD
    )
    admin.post(APPEALS_URL, json=supporter(email="one@example.org"))
    work()
    assert first.logins == [("appeals", RELAY_PASSWORD)]
    assert len(first.handler.received) == 1

    # The admin points the app at another relay and types no password: it is forgotten.
    reply = _relay_form(admin, relay_port=second.port)
    assert reply.status_code == 302
    page = admin.get("/admin").get_data(as_text=True)
    assert "its password was forgotten: enter it again" in page
    with app.app_context():
        assert "relay_password" not in settings.stored()
        assert settings.relay_settings().password is None
    admin.post(APPEALS_URL, json=supporter(email="two@example.org"))
    work()
    assert second.logins == []  # the new relay never saw the old relay's password
    assert first.logins == [("appeals", RELAY_PASSWORD)]


def test_the_environments_password_goes_to_the_environments_relay_only(app, admin, work, relays):
    first, second = relays
    app.config.update(MAIL_PORT=first.port, MAIL_USERNAME="appeals", MAIL_PASSWORD=RELAY_PASSWORD)
    admin.post(APPEALS_URL, json=supporter(email="one@example.org"))
    work()
    assert first.logins == [("appeals", RELAY_PASSWORD)]
    _relay_form(admin, relay_port=second.port)
    with app.app_context():
        relay = settings.relay_settings()
        assert relay.password is None
        assert relay.sources["relay_password"] == "not used: given for another host, port or user"
    admin.post(APPEALS_URL, json=supporter(email="two@example.org"))
    work()
    assert second.logins == []


def test_no_password_in_the_clear_to_a_relay_off_this_machine():
    """192.0.2.10 is TEST-NET-1: nothing answers there. The refusal comes before any
    connection, at once; a connection attempt would have waited for its timeout."""
    relay = RelaySettings(
        host="192.0.2.10",
        port=587,
        security="none",
        username="appeals",
        password=RELAY_PASSWORD,
        sender="appeals@example.org",
        org_name="Org",
        timeout=10.0,
        sources={},
        capture=False,
    )
    started = time.monotonic()
    with pytest.raises(RelayRefused, match="never crosses the network in the clear"):
        RelayConnection(relay).open()
    assert time.monotonic() - started < 0.5


@pytest.fixture
def listener() -> Iterator[tuple[int, list[float]]]:
    """A port where something listens, and the times it was connected to."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    sock.settimeout(0.1)
    seen: list[float] = []
    held: list[socket.socket] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])  # and then never say anything
                seen.append(time.monotonic())
            except OSError:
                continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


@pytest.mark.parametrize("action", ["/admin/check-connection", "/admin/test-message"])
def test_the_relay_checks_reach_only_the_submission_ports(app, admin, listener, action):
    port, seen = listener
    _relay_form(admin, relay_port=port)
    reply = submit(admin, "/admin", action, "")
    assert reply.status_code == 302
    page = admin.get("/admin").get_data(as_text=True)
    assert "Checks reach only ports 25, 465, 587" in page
    assert seen == []  # not even a connection


def test_a_silent_host_costs_the_check_a_few_seconds_not_a_web_worker(app, admin, listener):
    port, seen = listener
    app.config.update(RELAY_CHECK_PORTS=(25, 465, 587, port), RELAY_CHECK_TIMEOUT=1.0)
    _relay_form(admin, relay_port=port)
    started = time.monotonic()
    reply = submit(admin, "/admin", "/admin/check-connection", "")
    elapsed = time.monotonic() - started
    assert reply.status_code == 302
    assert len(seen) == 1
    assert elapsed < 5  # RELAY_CHECK_TIMEOUT, not MAIL_TIMEOUT
    assert "The relay could not be reached" in admin.get("/admin").get_data(as_text=True)


def test_every_failed_check_says_the_same(app, admin, listener, relays):
    """Closed port, silent host, refused log-in: one message, so that the screen tells
    nothing about the network beyond the relay (the details go to the server's log)."""
    port, _ = listener
    closed = free_port()
    app.config.update(RELAY_CHECK_PORTS=(25, 465, 587, port, closed), RELAY_CHECK_TIMEOUT=1.0)
    messages = []
    for relay_port in (closed, port):
        _relay_form(admin, relay_port=relay_port)
        submit(admin, "/admin", "/admin/check-connection", "")
        page = admin.get("/admin").get_data(as_text=True)
        messages.append(page.split('class="flash error" role="status">')[1].split("</p>")[0])
    assert messages[0] == messages[1]
    assert "refused" in messages[0] and str(port) not in messages[0]


def test_a_good_relay_passes_the_check(app, admin, relays):
    first, _ = relays
    app.config["RELAY_CHECK_PORTS"] = (25, 465, 587, first.port)
    _relay_form(
        admin, relay_port=first.port, relay_username="appeals", relay_password=RELAY_PASSWORD
    )
    submit(admin, "/admin", "/admin/check-connection", "")
    page = admin.get("/admin").get_data(as_text=True)
    assert f"The relay 127.0.0.1:{first.port} accepted a connection from {ADMIN}" in page
    assert first.logins == [("appeals", RELAY_PASSWORD)]
    assert first.handler.received == []  # a check sends nothing


def test_session_lost_on_open_is_reported_not_raised(relays):
    first, _ = relays
    relay = RelaySettings(
        host="127.0.0.1",
        port=free_port(),
        security="none",
        username=None,
        password=None,
        sender="appeals@example.org",
        org_name="Org",
        timeout=1.0,
        sources={},
        capture=False,
    )
    result = RelayConnection(relay).send(_Message())
    assert isinstance(result, SessionLost)
    assert "Connection refused" in result.reason


class _Message:
    envelope_from = "appeals@example.org"
    recipients = ["ministro@mju.es"]
    data = b"Subject: x\r\n\r\nx\r\n"
