"""The app as it is deployed: gunicorn behind Debian's nginx, which terminates TLS with a
certificate this test makes, and Chromium set to French driving it through Playwright.
A supporter sends and confirms, a manager signs in, and the rate limit counts each
real client address that nginx passes on. Everything on loopback."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from campaign.db import db
from campaign.devstack import web_argv
from campaign.models import Appeal, Role, Status
from campaign.users import create_user
from conftest import ROOT, free_port
from helpers import APPEALS_URL, CHROMIUM, CHROMIUM_ARGS, confirmation_token, self_signed

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

if not (os.path.exists(CHROMIUM) and os.path.exists(NGINX)):
    if os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} or {NGINX} is missing", pytrace=False)
    pytest.skip("chromium or nginx is not installed", allow_module_level=True)

from playwright.sync_api import Route, expect, sync_playwright  # noqa: E402

NGINX_CONF = """
worker_processes 1;
{user}
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    # Confirmation tokens never reach the access log: the path and the referrer
    # are logged with /confirm/[token] in their place.
    map $request_uri $logged_uri {{
        "~^(?<head>.*/confirm/)[^/?]+(?<tail>.*)$" "$head[token]$tail";
        default $request_uri;
    }}
    map $http_referer $logged_referer {{
        "~^(?<rhead>.*/confirm/)[^/?]+(?<rtail>.*)$" "$rhead[token]$rtail";
        default $http_referer;
    }}
    log_format private '$remote_addr [$time_local] "$request_method $logged_uri" '
                       '$status "$logged_referer"';
    access_log {dir}/access.log private;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(log.read_text(errors="replace")[-3000:])
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@dataclass
class Site:
    url: str
    port: int
    nginx_log: Path
    web_log: Path


@pytest.fixture
def site(app, backend, database_urls, redis, redis_url, smtp, tmp_path) -> Iterator[Site]:
    """nginx on https://127.0.0.1:<port>, in front of gunicorn as make run starts it,
    on the test's own database, Redis and SMTP server."""
    port, backend_port = free_port(), free_port()
    url = f"https://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "PACING_"))},
        "DATABASE_URL": database_urls[backend],
        "REDIS_URL": redis_url,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp.port),
        "MAIL_LOOPBACK_ONLY": "true",
        "MAIL_DEFAULT_SENDER": "appeals@amnesty.test",
        "SECRET_KEY": app.config["SECRET_KEY"],
        "PUBLIC_URL": url,
        "TRUSTED_PROXIES": "1",
        "RATELIMIT_APPEALS": "3 per minute",
        "PACING_ENABLED": "false",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "WEB_WORKERS": "1",
    }
    app.config.update(PUBLIC_URL=url)  # the in-process worker writes the same links
    web_log = tmp_path / "gunicorn.log"
    with web_log.open("wb") as out:
        web = subprocess.Popen(
            web_argv(f"127.0.0.1:{backend_port}"), env=env, cwd=ROOT, stdout=out, stderr=out
        )
    _, cert = self_signed(tmp_path)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;" if os.geteuid() == 0 else "",
            dir=tmp_path,
            port=port,
            backend=backend_port,
            cert=cert,
            key=tmp_path / "key.pem",
        )
    )
    nginx_out = tmp_path / "nginx.out"
    with nginx_out.open("wb") as out:
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
            stdout=out,
            stderr=out,
        )
    try:
        _wait_for(backend_port, web, web_log)
        _wait_for(port, nginx, nginx_out)
        yield Site(url, port, tmp_path / "access.log", web_log)
    finally:
        for process in (nginx, web):
            process.terminate()
            process.wait(timeout=10)


def _post(site: Site, source: str, body: dict[str, Any], forwarded: str | None = None) -> int:
    """A JSON submission from the given loopback address, through nginx."""
    context = ssl._create_unverified_context()  # noqa: S323 - the test's own certificate
    conn = http.client.HTTPSConnection(
        "127.0.0.1", site.port, context=context, source_address=(source, 0), timeout=10
    )
    headers = {"Content-Type": "application/json"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    conn.request("POST", APPEALS_URL, json.dumps(body), headers)
    status = conn.getresponse().status
    conn.close()
    return status


def _supporter(email: str) -> dict[str, Any]:
    return {
        "name": "Ana García",
        "email": email,
        "language": "es",
        "country": "GB",
        "consent": True,
    }


def test_a_supporter_and_a_manager_through_nginx_and_tls_in_a_french_browser(app, site, smtp, work):
    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, "correct horse battery staple")
    ours = urlsplit(site.url)
    elsewhere: list[str] = []

    def guard(route: Route) -> None:
        if urlsplit(route.request.url).netloc == ours.netloc:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(
            base_url=site.url,
            ignore_https_errors=True,  # the certificate the test made
            locale="fr-FR",
            extra_http_headers={"Accept-Language": "fr-FR,fr;q=0.9"},
        )
        context.set_default_timeout(10_000)
        context.route("**/*", guard)
        page = context.new_page()

        # The supporter fills in the form and sends it.
        response = page.goto("/c/pavlov-extradition")
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        assert response.headers["referrer-policy"] == "same-origin"
        page.fill("#name", "Zoë Dupont")
        page.fill("#email", "zoe@example.org")
        page.select_option("#language", "es")
        page.select_option("#country", "FR")
        page.fill("#message", "Je vous demande d'agir.")
        page.check("#consent")
        assert page.evaluate("() => document.documentElement.lang") == "fr"  # the browser's
        page.locator("#send").click()
        expect(page.locator("#next-step")).to_be_visible()
        [cookie] = [c for c in context.cookies() if c["name"] == "session"]
        assert cookie["secure"] and cookie["httpOnly"]

        # The confirmation mail's link, opened and confirmed in the browser.
        work()
        [mail] = smtp.received
        text = mail.message.get_body(("plain",)).get_content()
        assert f"{site.url}/confirm/" in text
        token = confirmation_token(text)
        page.goto(f"/confirm/{token}")
        expect(page.locator("#letter-preview")).to_contain_text("Je vous demande d'agir.")
        page.locator("#submit").click()
        expect(page.locator("#confirmed")).to_be_visible()
        work()
        assert [m.rcpt_tos for m in smtp.received][-1] == ["ministro@mju.es"]
        with app.app_context():
            assert db.session.scalar(db.select(Appeal.status)) == Status.SENT

        # A manager signs in.
        page.goto("/login")
        page.fill("#email", "manager@example.org")
        page.fill("#password", "correct horse battery staple")
        page.get_by_role("button", name="Log in").click()
        expect(page.locator("#counts")).to_be_visible()
        expect(page.locator('[data-status="sent"] strong')).to_have_text("1")
        context.close()
        browser.close()
    assert elsewhere == []

    # Neither nginx's access log nor gunicorn's holds the token.
    for log in (site.nginx_log, site.web_log):
        text = log.read_text(errors="replace")
        assert "/confirm/[token]" in text, log
        assert token not in text, log


def test_the_rate_limit_counts_each_real_client_behind_nginx(app, site):
    first = [_post(site, "127.0.0.2", _supporter(f"a{i}@example.org")) for i in range(4)]
    assert first == [202, 202, 202, 429]
    # Another client is not held up by the first one's flood...
    assert _post(site, "127.0.0.3", _supporter("b@example.org")) == 202
    # ...and a forged X-Forwarded-For neither frees a client nor blames another.
    assert _post(site, "127.0.0.2", _supporter("c@example.org"), "198.51.100.9") == 429
    assert _post(site, "127.0.0.3", _supporter("d@example.org"), "127.0.0.2") == 202
