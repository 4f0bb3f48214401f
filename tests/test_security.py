"""HTTPS and a proxy in front: headers, cookies, the client's real address, links from
PUBLIC_URL, tokens kept out of access logs, files kept private. (The same, through a
real nginx with TLS and a real browser, is in test_proxy.py.)"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from conftest import capture_config, fresh_app
from helpers import APPEALS_URL, csrf_token, supporter


@pytest.fixture
def https_app(backend, database_urls, redis_url, smtp, tmp_path):
    from conftest import _base_config

    config = _base_config(database_urls[backend], redis_url, smtp.port)
    config.update(PUBLIC_URL="https://appeals.example.org", MAIL_CAPTURE_DIR=str(tmp_path / "c"))
    with fresh_app(config) as app:
        yield app


def test_plain_http_pages_carry_the_safe_headers(client):
    reply = client.get("/c/pavlov-extradition")
    assert reply.headers["Referrer-Policy"] == "same-origin"
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
    assert "Strict-Transport-Security" not in reply.headers  # http: no HSTS


def test_over_https_cookies_are_secure_and_hsts_is_sent(https_app):
    client = https_app.test_client()
    page = client.get("/login", base_url="https://appeals.example.org")
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
    cookie = page.headers["Set-Cookie"]  # the session, which holds the CSRF token
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_over_https_a_same_origin_referrer_lets_forms_through(https_app):
    """Flask-WTF checks the Referer on HTTPS. A Referrer-Policy of no-referrer makes
    browsers drop it, and then every form fails; same-origin keeps it for our own pages."""
    client = https_app.test_client()
    base = "https://appeals.example.org"
    token = csrf_token(client.get("/login", base_url=base).get_data(as_text=True))
    data = {"csrf_token": token, "email": "nobody@example.org", "password": "x" * 12}
    without = client.post("/login", data=data, base_url=base)
    assert without.status_code == 400  # what no-referrer did to every form
    same_origin = client.post(
        "/login", data=data, base_url=base, headers={"Referer": f"{base}/login"}
    )
    assert same_origin.status_code == 401  # through the CSRF check, to the password check


def _limited_app(database_urls, backend, redis_url, smtp, proxies: int):
    from conftest import _base_config

    config = _base_config(database_urls[backend], redis_url, smtp.port)
    config.update(RATELIMIT_APPEALS="2 per minute", TRUSTED_PROXIES=proxies)
    return fresh_app(config)


def _post_from(client: Any, address: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    environ = {"REMOTE_ADDR": address}
    reply = client.post(
        APPEALS_URL,
        json=supporter(email=f"{abs(hash((address, forwarded)))}@example.org"),
        headers=headers,
        environ_base=environ,
    )
    return reply.status_code


def test_a_forged_forwarded_for_changes_nothing_without_trusted_proxies(
    backend, database_urls, redis, redis_url, smtp
):
    with _limited_app(database_urls, backend, redis_url, smtp, 0) as app:
        client = app.test_client()
        codes = [_post_from(client, "203.0.113.7", f"198.51.100.{i}") for i in range(3)]
    assert codes == [202, 202, 429]  # one client, whatever it claims to forward


def test_behind_one_trusted_proxy_each_client_has_its_own_limit(
    backend, database_urls, redis, redis_url, smtp
):
    with _limited_app(database_urls, backend, redis_url, smtp, 1) as app:
        client = app.test_client()
        proxy = "10.0.0.1"  # every request comes from the proxy...
        first = [_post_from(client, proxy, "198.51.100.1") for _ in range(3)]
        second = [_post_from(client, proxy, "198.51.100.2") for _ in range(2)]
        # ...and a client's own forged entry is ignored: only the proxy's last one counts.
        forged = _post_from(client, proxy, "1.2.3.4, 198.51.100.1")
    assert first == [202, 202, 429]
    assert second == [202, 202]
    assert forged == 429


def test_links_come_from_public_url_not_from_the_host_header(app, client, smtp, work):
    from helpers import confirmation_token

    client.post(APPEALS_URL, json=supporter(), headers={"Host": "evil.example"})
    work()
    body = smtp.received[0].message.get_body(("plain",)).get_content()
    assert "http://appeals.test/confirm/" in body and "evil.example" not in body
    token = confirmation_token(body)
    reply = client.post(f"/api/v1/confirm/{token}", headers={"Host": "evil.example"})
    assert reply.get_json()["status_url"].startswith("http://appeals.test/api/v1/appeals/")


def test_confirmation_tokens_never_reach_the_access_log():
    from campaign.weblog import AccessLogger, redact

    token = "Zx3_abcdefghijklmnopqrstuvwxyz0123456789ABCD"
    assert redact(f"POST /confirm/{token} HTTP/1.1") == "POST /confirm/[token] HTTP/1.1"
    assert redact(f"/api/v1/confirm/{token}?x=1") == "/api/v1/confirm/[token]?x=1"
    # An appeal's public id opens its status page and its printable letter.
    public_id = "0de1d64b-e234-480e-bddd-96f12f05594a"
    assert redact(f"GET /appeal/{public_id}/letter.pdf HTTP/1.1") == (
        "GET /appeal/[appeal]/letter.pdf HTTP/1.1"
    )
    assert redact(f"/api/v1/appeals/{public_id}") == "/api/v1/appeals/[appeal]"

    class Config:
        errorlog = "-"
        accesslog = "-"
        loglevel = "info"
        access_log_format = '%(h)s "%(r)s" %(s)s "%(f)s" %(U)s'
        logconfig = logconfig_dict = logconfig_json = syslog = None
        disable_redirect_access_to_syslog = False
        capture_output = False
        user, group = 0, 0

    class Response:
        status = "200 OK"
        sent = 10
        headers: list[tuple[str, str]] = []

    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"/confirm/{token}",
        "PATH_INFO": f"/confirm/{token}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_REFERER": f"https://appeals.example.org/confirm/{token}",
        "REMOTE_ADDR": "203.0.113.9",
    }
    logger = AccessLogger.__new__(AccessLogger)
    logger.cfg = Config()
    atoms = logger.atoms(Response(), [("Referer", environ["HTTP_REFERER"])], environ, _Elapsed())
    line = Config.access_log_format % atoms
    assert token not in line
    assert '"POST /confirm/[token] HTTP/1.1"' in line
    assert '"https://appeals.example.org/confirm/[token]"' in line


class _Elapsed:
    seconds = 0
    microseconds = 1500


def test_database_capture_and_instance_are_for_their_owner_only(database_urls, redis_url, tmp_path):
    from flask_migrate import upgrade

    from campaign.capture import MaildirHandler
    from campaign.db import db

    instance = tmp_path / "instance"
    config = capture_config(f"sqlite:///{instance / 'appeals.db'}", redis_url, tmp_path)
    config["MAIL_CAPTURE_DIR"] = str(instance / "mail-capture")
    import os

    os.environ["INSTANCE_PATH"] = str(instance)
    try:
        from app import create_app

        app = create_app(config)
    finally:
        del os.environ["INSTANCE_PATH"]
    with app.app_context():
        upgrade()
        db.engine.dispose()
    MaildirHandler(instance / "mail-capture").maildir.add(b"Subject: letter\r\n\r\nAna\r\n")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(instance) == 0o700
    assert mode(instance / "appeals.db") == 0o600
    assert mode(instance / "mail-capture") == 0o700
    [message] = list((instance / "mail-capture" / "new").iterdir())
    assert mode(message) == 0o600
