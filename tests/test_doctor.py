"""flask doctor: a real DNS server on loopback (dnslib) answers for the sender domain,
a real SMTP relay with STARTTLS and AUTH (aiosmtpd), real Redis, a real dispatcher
process writing its heartbeat, a real RQ worker registration. Nothing leaves the
machine: dnspython asks only the loopback server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from dnslib import QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer
from rq import Queue, Worker

from campaign.dkim import create_key
from campaign.doctor import FAIL, OK, check_dns
from conftest import SinkHandler, _base_config, free_port, fresh_app
from helpers import self_signed

ROOT = Path(__file__).resolve().parent.parent
DOMAIN, SELECTOR = "amnesty.test", "appeals"


class Zone(BaseResolver):
    """Answers from a dict {(name, type): [rdata]}; NXDOMAIN for unknown names."""

    def __init__(self, records: dict[tuple[str, str], list[Any]]) -> None:
        self.records = records

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        for rdata in self.records.get((name, QTYPE[request.q.qtype]), []):
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=60))
        if not any(n == name for n, _ in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def _txt(text: str) -> TXT:
    return TXT([text[i : i + 255] for i in range(0, len(text), 255)])


@pytest.fixture
def dns_zone() -> Iterator[tuple[str, dict[tuple[str, str], list[Any]]]]:
    records: dict[tuple[str, str], list[Any]] = {}
    port = free_port()
    quiet = DNSLogger(logf=lambda _: None)
    server = DNSServer(Zone(records), port=port, address="127.0.0.1", logger=quiet)
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}", records
    finally:
        server.stop()
        server.server.server_close()  # dnslib's stop() leaves the socket open


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """STARTTLS with a certificate only MAIL_CA_FILE trusts, and AUTH after TLS only."""
    context, cert = self_signed(tmp_path)
    logins: list[str] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
        logins.append(data.login.decode())
        return AuthResult(success=data.password == b"relay secret")

    port = free_port()
    controller = Controller(
        SinkHandler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield port, cert, logins
    finally:
        controller.stop()


def _good_zone(records: dict, signer: Any) -> None:
    records.clear()
    records[(DOMAIN, "TXT")] = [_txt("v=spf1 mx ip4:127.0.0.0/8 -all")]
    records[(DOMAIN, "A")] = [A("192.0.2.10")]
    records[(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT")] = [_txt(signer.record())]
    records[(f"_dmarc.{DOMAIN}", "TXT")] = [_txt("v=DMARC1; p=reject; adkim=s; aspf=s")]


@pytest.fixture
def doctor_app(database_urls, redis, redis_url, tls_relay, tmp_path, monkeypatch, dns_zone):
    port, cert, _ = tls_relay
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    config = _base_config(database_urls["sqlite"], redis_url, port)
    config.update(
        MAIL_USE_TLS=True,
        MAIL_USERNAME="appeals",
        MAIL_PASSWORD="relay secret",
        MAIL_CA_FILE=str(cert),
        PUBLIC_URL="https://appeals.amnesty.test",
        DOCTOR_NAMESERVER=dns_zone[0],
    )
    with fresh_app(config) as app:
        signer = create_key(app.instance_path, SELECTOR, DOMAIN)
        _good_zone(dns_zone[1], signer)
        app.extensions["test_signer"] = signer
        yield app


@pytest.fixture
def dispatcher(doctor_app, redis, database_urls, redis_url, tmp_path) -> Iterator[None]:
    """The real dispatcher, in its own process, until its first heartbeat."""
    env = {
        **os.environ,
        "DATABASE_URL": database_urls["sqlite"],
        "REDIS_URL": redis_url,
        "SECRET_KEY": "test-secret-key",
        "INSTANCE_PATH": doctor_app.instance_path,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_LOOPBACK_ONLY": "true",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "appeals", "dispatch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not redis.get("appeals:dispatcher:heartbeat"):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the dispatcher wrote no heartbeat"
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stderr.close()


@pytest.fixture
def worker(redis) -> Iterator[Worker]:
    """A worker as RQ registers one when it starts (the doctor reads that registry)."""
    registered = Worker([Queue("appeals", connection=redis)], connection=redis)
    registered.register_birth()
    try:
        yield registered
    finally:
        registered.register_death()


def _doctor(app: Any) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["doctor"])
    return result.exit_code, result.output


def test_a_good_setup_passes_in_plain_words(doctor_app, dispatcher, worker, tls_relay):
    code, out = _doctor(doctor_app)
    assert code == 0, out
    assert "[fail]" not in out
    for words in [
        "migrations: the database is current",
        "redis: answers",
        "workers: 1 alive",
        "dispatcher: ran",
        "spf: amnesty.test allows the relay (127.0.0.1)",
        "dkim: appeals._domainkey.amnesty.test publishes the configured key",
        "dmarc: p=reject; From <appeals@amnesty.test> aligns by DKIM and SPF",
        "public url: https://appeals.amnesty.test is https",
        "All checks passed.",
    ]:
        assert words in out, out
    assert "redis persistence" in out  # on or off, it is said
    assert tls_relay[2] == ["appeals"]  # it logged in, over TLS (AUTH needs it here)
    assert "relay secret" not in out


def test_nothing_running_and_an_untrusted_certificate_fail(doctor_app):
    doctor_app.config["MAIL_CA_FILE"] = None
    doctor_app.config["PUBLIC_URL"] = "http://appeals.amnesty.test"
    code, out = _doctor(doctor_app)
    assert code == 1
    assert "[fail] workers: none alive" in out
    assert "[fail] dispatcher: has never run" in out
    assert "[fail] public url" in out
    assert any(line.startswith("[fail] relay") for line in out.splitlines()), out


def _dns_checks(app: Any, nameserver: str) -> dict[str, Any]:
    with app.app_context():
        return {c.name: c for c in check_dns(nameserver)}


def test_missing_spf(doctor_app, dns_zone):
    nameserver, records = dns_zone
    del records[(DOMAIN, "TXT")]
    checks = _dns_checks(doctor_app, nameserver)
    assert checks["spf"].status == FAIL
    assert "has no SPF record" in checks["spf"].detail
    assert checks["dkim"].status == OK
    assert checks["dmarc"].status == OK  # DKIM still aligns
    code, out = _doctor(doctor_app)
    assert code == 1 and "[fail] spf" in out


def test_spf_that_does_not_name_the_relay(doctor_app, dns_zone):
    nameserver, records = dns_zone
    records[(DOMAIN, "TXT")] = [_txt("v=spf1 include:_spf.esp.test ~all")]
    records[("_spf.esp.test", "TXT")] = [_txt("v=spf1 ip4:198.51.100.0/24 -all")]
    checks = _dns_checks(doctor_app, nameserver)
    assert checks["spf"].status == FAIL
    assert "softfail" in checks["spf"].detail


def test_wrong_dkim_key(doctor_app, dns_zone, tmp_path):
    nameserver, records = dns_zone
    other = create_key(str(tmp_path / "elsewhere"), SELECTOR, DOMAIN)
    records[(f"{SELECTOR}._domainkey.{DOMAIN}", "TXT")] = [_txt(other.record())]
    checks = _dns_checks(doctor_app, nameserver)
    assert checks["dkim"].status == FAIL
    assert "publishes another key" in checks["dkim"].detail
    signer = doctor_app.extensions["test_signer"]
    assert signer.dns_line() in checks["dkim"].detail  # what to publish instead


def test_reject_with_misalignment(doctor_app, dns_zone):
    """DKIM signs for the ESP's domain, SPF does not name the relay, p=reject."""
    nameserver, records = dns_zone
    doctor_app.config.update(DKIM_DOMAIN="esp.example", DKIM_SELECTOR=SELECTOR)
    with doctor_app.app_context():
        from campaign.dkim import current_signer

        signer = current_signer()
    records[(f"{SELECTOR}._domainkey.esp.example", "TXT")] = [_txt(signer.record())]
    records[(DOMAIN, "TXT")] = [_txt("v=spf1 ip4:192.0.2.1 -all")]
    checks = _dns_checks(doctor_app, nameserver)
    assert checks["dkim"].status == OK  # the key is right: for the wrong domain
    assert checks["dmarc"].status == FAIL
    assert "p=reject, but neither DKIM nor SPF aligns" in checks["dmarc"].detail


def test_no_dmarc_record(doctor_app, dns_zone):
    nameserver, records = dns_zone
    del records[(f"_dmarc.{DOMAIN}", "TXT")]
    assert _dns_checks(doctor_app, nameserver)["dmarc"].status == FAIL


def test_the_admin_screen_shows_the_same_report(doctor_app, worker):
    from campaign.models import Role
    from campaign.users import create_user
    from helpers import log_in

    with doctor_app.app_context():
        create_user("admin@example.org", Role.ADMIN, "correct horse battery staple")
    client = doctor_app.test_client()
    # PUBLIC_URL is https here: so is the client, with the Referer Flask-WTF checks on HTTPS.
    client.environ_base.update({"wsgi.url_scheme": "https", "HTTP_REFERER": "https://localhost/"})
    assert client.get("/admin/doctor").status_code in (302, 401, 403)  # staff only
    signed_in = log_in(client, "admin@example.org", "correct horse battery staple")
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    page = client.get("/admin/doctor")
    assert page.status_code == 200, (page.location, signed_in.location)
    html = page.get_data(as_text=True)
    with doctor_app.app_context():
        from campaign.doctor import run_checks

        expected = run_checks()
    for check in expected:
        assert f"<td>{check.name}</td>" in html
    assert "has never run" in html  # no dispatcher here
    assert "1 check failed." in html  # the dispatcher alone
