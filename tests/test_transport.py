"""The SMTP session: certificates verified on STARTTLS and on implicit TLS (port 465),
a relay that never speaks bounded by MAIL_TIMEOUT. Real SMTP servers on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from campaign import settings
from campaign.db import db
from campaign.models import Appeal, CampaignOption
from campaign.models import Status as S
from conftest import SinkHandler, free_port
from helpers import APPEALS_URL, self_signed, supporter


@pytest.fixture
def no_confirmation(app):
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()


def _appeal(app) -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        db.session.expunge(appeal)
        return appeal


def _tls_relay(tmp_path, security: str) -> tuple[Controller, SinkHandler, int, str]:
    """An aiosmtpd relay on loopback with a certificate of the test's own making:
    STARTTLS required, or TLS from the first byte (what port 465 speaks)."""
    context, cert_file = self_signed(tmp_path)
    handler = SinkHandler()
    port = free_port()
    if security == "starttls":
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    return controller, handler, port, str(cert_file)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_certificate_nobody_vouches_for_gets_nothing(
    app, client, work, no_confirmation, tmp_path, security
):
    """Flask-Mail 0.10 would have sent the appeal to this relay."""
    controller, handler, port, _ = _tls_relay(tmp_path, security)
    try:
        with app.app_context():
            settings.save({"relay_port": port, "relay_security": security}, by="test")
        client.post(APPEALS_URL, json=supporter())
        work()
    finally:
        controller.stop()
    assert handler.received == []
    appeal = _appeal(app)
    assert appeal.status == S.RETRYING  # the admin's to fix; the appeal never fails for it
    assert appeal.attempts == 0
    assert appeal.status_reason.startswith("relay unavailable: SSLCertVerificationError")
    assert "CERTIFICATE_VERIFY_FAILED" in appeal.status_reason


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_certificate_from_the_configured_ca_is_trusted(
    app, client, work, no_confirmation, tmp_path, security
):
    controller, handler, port, cert_file = _tls_relay(tmp_path, security)
    app.config["MAIL_CA_FILE"] = cert_file
    try:
        with app.app_context():
            settings.save({"relay_port": port, "relay_security": security}, by="test")
        client.post(APPEALS_URL, json=supporter())
        work()
    finally:
        controller.stop()
    [mail] = handler.received
    assert mail.rcpt_tos == ["ministro@mju.es"]
    assert _appeal(app).status == S.SENT


@pytest.fixture
def silent_relay() -> Iterator[int]:
    """A server that accepts connections and then says nothing, ever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_a_relay_that_never_answers_costs_mail_timeout_not_a_worker(
    app, client, work, no_confirmation, silent_relay
):
    app.config["MAIL_TIMEOUT"] = 1.0
    with app.app_context():
        settings.save({"relay_port": silent_relay}, by="test")
    client.post(APPEALS_URL, json=supporter())
    started = time.monotonic()
    work()
    elapsed = time.monotonic() - started
    # Two sessions, each given up after MAIL_TIMEOUT; without it, the job would hang.
    assert elapsed < 10
    appeal = _appeal(app)
    assert appeal.status == S.RETRYING
    assert appeal.status_reason == (
        "relay unavailable: no answer from the relay within 1 s (MAIL_TIMEOUT)"
    )
    assert appeal.attempts == 0
