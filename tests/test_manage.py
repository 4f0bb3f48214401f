"""The managers' screens: the send queue at a glance, failures with the relay's
words, and the local mail capture, on real SMTP servers on loopback."""

from __future__ import annotations

import html as htmlmod
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from redis import Redis

from campaign.capture import MaildirHandler
from campaign.db import db
from campaign.models import Appeal, CampaignOption, Diplomat, Recipient, Role, Status
from campaign.users import create_user
from conftest import capture_config, fresh_app, run_jobs
from helpers import APPEALS_URL, csrf_token, supporter

MANAGER = "manager@example.org"
PASSWORD = "correct horse battery staple"


def log_in_manager(app: Any, client: Any) -> Any:
    with app.app_context():
        create_user(MANAGER, Role.MANAGER, PASSWORD)
    token = csrf_token(client.get("/login").get_data(as_text=True))
    reply = client.post(
        "/login", data={"csrf_token": token, "email": MANAGER, "password": PASSWORD}
    )
    assert reply.status_code == 302
    return client


@pytest.fixture
def manager(app: Any, client: Any) -> Any:
    return log_in_manager(app, client)


def no_confirmation(app: Any) -> None:
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()


def counts(html: str) -> dict[str, int]:
    block = re.search(r'<ul class="counts" id="counts">(.*?)</ul>', html, re.S)
    assert block
    return {
        status: int(n)
        for status, n in re.findall(
            r'<li data-status="(\w+)">[^<]*<strong>(\d+)</strong></li>', block.group(1)
        )
    }


def table(html: str, table_id: str) -> list[list[str]]:
    """Rows of cells (text only, entities decoded) of one table, without its header row."""
    found = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert found, f"no table {table_id}"
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S):
        if "<th>" in row and "<td" not in row:
            continue
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        rows.append([htmlmod.unescape(re.sub(r"<[^>]+>", " ", c)).strip() for c in cells])
    return rows


def appeal_status(app: Any, email: str) -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email=email))
        assert appeal is not None
        db.session.expunge(appeal)
        return appeal


# --- access ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/manage", "/manage/mail", "/manage/mail/anything"])
def test_manage_pages_need_a_login(client, page):
    reply = client.get(page)
    assert reply.status_code == 302
    assert urlsplit(reply.headers["Location"]).path == "/login"


def test_admins_may_see_the_manage_pages(app, client):
    with app.app_context():
        create_user("admin@example.org", Role.ADMIN, PASSWORD)
    token = csrf_token(client.get("/login").get_data(as_text=True))
    client.post(
        "/login", data={"csrf_token": token, "email": "admin@example.org", "password": PASSWORD}
    )
    assert client.get("/manage").status_code == 200


# --- the dashboard -----------------------------------------------------------------------


def test_empty_dashboard(manager):
    html = manager.get("/manage").get_data(as_text=True)
    assert counts(html) == dict.fromkeys(Status.ALL, 0)
    assert "Nothing has failed." in html
    assert table(html, "latest") == [["No appeals yet."]]
    assert "local mail capture" not in html


def test_dashboard_counts_latest_and_permanent_failures(app, manager, client, smtp, work):
    # One appeal awaiting confirmation, one sent, one refused for good by the relay.
    client.post(APPEALS_URL, json=supporter(email="waiting@example.org"))
    work()
    no_confirmation(app)
    client.post(APPEALS_URL, json=supporter(name="Sent Supporter", email="sent@example.org"))
    work()
    smtp.handler.rcpt_replies = {"ministro@mju.es": "550 5.1.1 mailbox unavailable"}
    client.post(APPEALS_URL, json=supporter(name="Bounced Supporter", email="bounce@example.org"))
    work()

    failed = appeal_status(app, "bounce@example.org")
    assert failed.status == Status.FAILED
    assert "550" in failed.status_reason and "mailbox unavailable" in failed.status_reason
    assert appeal_status(app, "sent@example.org").status == Status.SENT

    html = manager.get("/manage").get_data(as_text=True)
    got = counts(html)
    assert got[Status.AWAITING_CONFIRMATION] == 1
    assert got[Status.SENT] == 1
    assert got[Status.FAILED] == 1
    assert sum(got.values()) == 3

    [failure] = table(html, "failures")
    assert failure[0] == str(failed.id)
    assert "Bounced Supporter" in failure[1] and "bounce@example.org" in failure[1]
    assert failure[2] == "failed"
    # Each copy's state, with the relay's words, then the appeal's reason.
    copies = " ".join(failure[4].split())
    assert copies == "✗ TO ministro@mju.es: failed (550 5.1.1 mailbox unavailable)"
    assert failure[5] == "ministro@mju.es: 550 5.1.1 mailbox unavailable"

    latest = table(html, "latest")
    assert [row[2].split()[-1] for row in latest] == [
        "bounce@example.org",
        "sent@example.org",
        "waiting@example.org",
    ]
    assert [row[5] for row in latest] == ["failed", "sent", "awaiting confirmation"]
    assert " ".join(latest[1][6].split()) == "✓ TO ministro@mju.es: accepted"
    assert latest[2][6] == "not tried yet"
    assert latest[1][8] != ""  # sent at
    assert latest[0][8] == ""


def test_temporary_refusal_is_retrying_with_its_reason(app, manager, client, smtp, work):
    no_confirmation(app)
    smtp.handler.rcpt_replies = {"ministro@mju.es": "451 4.7.1 greylisted, try again later"}
    client.post(APPEALS_URL, json=supporter(email="grey@example.org"))
    work()

    appeal = appeal_status(app, "grey@example.org")
    assert appeal.status == Status.RETRYING
    assert "451" in appeal.status_reason and "greylisted" in appeal.status_reason
    assert appeal.next_attempt_at is not None
    assert smtp.received == []

    html = manager.get("/manage").get_data(as_text=True)
    assert counts(html)[Status.RETRYING] == 1
    assert counts(html)[Status.FAILED] == 0
    [row] = table(html, "failures")
    assert row[2] == "retrying"
    assert "451" in row[4] and "greylisted, try again later" in row[4]


def test_data_refusal_is_shown_too(app, manager, client, smtp, work):
    no_confirmation(app)
    smtp.handler.data_replies = ["554 5.7.1 message rejected as spam"]
    client.post(APPEALS_URL, json=supporter(email="spam@example.org"))
    work()
    appeal = appeal_status(app, "spam@example.org")
    assert appeal.status == Status.FAILED
    [row] = table(manager.get("/manage").get_data(as_text=True), "failures")
    assert "554" in row[4] and "rejected as spam" in row[4]


def test_supporter_text_is_escaped_on_the_dashboard(app, manager, client, smtp, work):
    # Names may not hold < > @ at all (intake refuses them); what they may hold is escaped.
    client.post(APPEALS_URL, json=supporter(name='Ana & "Sons"', email="xss@example.org"))
    html = manager.get("/manage").get_data(as_text=True)
    assert 'Ana & "Sons"' not in html
    assert "Ana &amp; &#34;Sons&#34;" in html


def test_mail_page_without_capture(manager):
    html = manager.get("/manage/mail").get_data(as_text=True)
    assert "A real relay is configured" in html
    assert manager.get("/manage/mail/whatever").status_code == 404


# --- the mail capture --------------------------------------------------------------------


@pytest.fixture
def capture_app(
    backend: str, database_urls: dict[str, str], redis: Redis, redis_url: str, tmp_path: Path
) -> Iterator[Any]:
    """An app with no MAIL_SERVER, so everything goes to the local capture, and that
    capture running on a free loopback port."""
    config = capture_config(database_urls[backend], redis_url, tmp_path)
    with fresh_app(config) as app:
        assert app.config["MAIL_CAPTURE"] is True
        controller = Controller(
            MaildirHandler(config["MAIL_CAPTURE_DIR"]),
            hostname="127.0.0.1",
            port=config["MAIL_CAPTURE_PORT"],
        )
        controller.start()
        try:
            yield app
        finally:
            controller.stop()


def test_captured_mail_is_listed_and_readable(capture_app, redis):
    app = capture_app
    client = app.test_client()
    log_in_manager(app, client)
    with app.app_context():
        db.session.add(
            Diplomat(
                target_state="ES",
                country="GB",
                name="Embassy of Spain in London",
                email="emb.londres@maec.example.org",
            )
        )
        db.session.commit()
    no_confirmation(app)

    html = client.get("/manage/mail").get_data(as_text=True)
    assert table(html, "captured") == [["Nothing captured yet."]]
    assert "local mail capture" in client.get("/manage").get_data(as_text=True)

    reply = client.post(APPEALS_URL, json=supporter(name='Ana "Ñ" García', country="GB"))
    assert reply.status_code == 202
    run_jobs(app, redis)
    assert appeal_status(app, "ana@example.org").status == Status.SENT

    html = client.get("/manage/mail").get_data(as_text=True)
    assert "1 in all" in html
    [row] = table(html, "captured")
    assert row[1] == "ministro@mju.es, emb.londres@maec.example.org"
    assert "via Amnesty Test Section" in row[2]
    subject = row[3]
    assert "Pavlov" in subject
    [key] = re.findall(r'href="/manage/mail/([^"/]+)"', html)

    page = client.get(f"/manage/mail/{key}")
    assert page.status_code == 200
    headers = {r[0]: r[1] for r in table(page.get_data(as_text=True), "headers")}
    assert headers["Envelope from"] == "appeals@amnesty.test"
    assert headers["Envelope to"] == "ministro@mju.es, emb.londres@maec.example.org"
    assert headers["To"].endswith("<ministro@mju.es>")
    assert "emb.londres@maec.example.org" in headers["Cc"]
    assert "ana@example.org" in headers["Reply-To"]
    assert headers["Subject"] == subject
    with app.app_context():
        message_id = db.session.scalar(db.select(Recipient.message_id).filter_by(role="to"))
    assert headers["Message-ID"] == message_id
    text = page.get_data(as_text=True)
    assert "Por favor, actúe ya." in htmlmod.unescape(text)

    raw = client.get(f"/manage/mail/{key}/raw")
    assert raw.status_code == 200
    assert raw.mimetype == "text/plain"
    assert f"Message-ID: {message_id}".encode() in raw.data

    assert client.get("/manage/mail/no-such-key").status_code == 404
    assert client.get("/manage/mail/no-such-key/raw").status_code == 404


def test_confirmation_mail_is_captured_too(capture_app, redis):
    app = capture_app
    client = app.test_client()
    log_in_manager(app, client)
    client.post(APPEALS_URL, json=supporter(email="new@example.org"))
    run_jobs(app, redis)
    [row] = table(client.get("/manage/mail").get_data(as_text=True), "captured")
    assert row[1] == "new@example.org"
