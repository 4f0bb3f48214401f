"""The managers' console in a real browser (Debian's Chromium through Playwright), against
the app on 127.0.0.1: signing in, a failure appearing on the overview by itself and
being retried, pausing and resuming, the CSV export, the admin pages refused, a
390-pixel phone, and no JavaScript at all. A screenshot of the overview is kept as an
artefact (in ``ARTEFACTS_DIR`` if set, else in the test's temporary directory)."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import test_browser as shared  # its fixtures; it also skips this module without Chromium
from playwright.sync_api import Page, expect

from campaign.db import db
from campaign.models import Appeal, CampaignOption, Role, Status
from campaign.users import create_user
from helpers import APPEALS_URL, supporter

browser = shared.browser
live_server = shared.live_server
new_page = shared.new_page
DESKTOP, PHONE, no_horizontal_scroll = shared.DESKTOP, shared.PHONE, shared.no_horizontal_scroll

MANAGER = "manager@example.org"
PASSWORD = "correct horse battery staple"
REFRESHED = 15_000
"""Milliseconds to wait for the overview to refresh by itself (it asks every 5 s)."""


def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ARTEFACTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prepare(app: Any) -> Any:
    """A manager, and a campaign that sends without waiting for a confirmation."""
    with app.app_context():
        create_user(MANAGER, Role.MANAGER, PASSWORD)
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()
        db.session.remove()
    return app.test_client()


def sign_in(page: Page, where: str = "/manage") -> None:
    page.goto(where)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("E-mail").fill(MANAGER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_be_visible()


def watch_errors(page: Page) -> list[str]:
    """Console errors (a script refused by the Content-Security-Policy shows here)."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def status_of(app: Any, email: str) -> str:
    with app.app_context():
        status = db.session.scalar(db.select(Appeal.status).filter_by(email=email))
        db.session.remove()
    return str(status)


def test_a_failure_appears_by_itself_and_is_retried(
    app: Any, smtp: Any, work: Callable[[], None], new_page: Callable[..., Page], tmp_path: Path
) -> None:
    client = prepare(app)
    page = new_page(**DESKTOP)
    errors = watch_errors(page)
    sign_in(page)
    expect(page.locator("h1")).to_have_text("Send queue")
    expect(page.locator("#live-attention")).to_contain_text("Nothing has failed.")
    page.evaluate("() => { window.notReloaded = true; }")

    smtp.handler.rcpt_replies = {"ministro@mju.es": "550 5.1.1 mailbox unavailable"}
    assert client.post(APPEALS_URL, json=supporter(email="bounce@example.org")).status_code == 202
    work()
    assert status_of(app, "bounce@example.org") == Status.FAILED

    # No reload: the overview asks for fresh figures and shows the failure.
    attention = page.locator("#live-attention")
    expect(attention).to_contain_text("550 5.1.1 mailbox unavailable", timeout=REFRESHED)
    expect(page.locator('#counts [data-status="failed"] strong')).to_have_text("1")
    assert page.evaluate("() => window.notReloaded") is True
    expect(page.locator("#live-status")).to_contain_text("Figures as of")

    smtp.handler.rcpt_replies = {}  # the ministry fixed its mailbox
    attention.get_by_role("button", name="retry").click()
    expect(page.locator(".flash.ok")).to_have_text("Retry: 1 appeal.")
    work()
    assert status_of(app, "bounce@example.org") == Status.SENT
    expect(page.locator('#counts [data-status="sent"] strong')).to_have_text("1", timeout=REFRESHED)
    expect(page.locator("#live-attention")).to_contain_text("Nothing has failed.")
    page.screenshot(path=artefacts(tmp_path) / "console-overview.png", full_page=True)
    assert errors == []


def test_pause_and_resume_sending(
    app: Any, smtp: Any, work: Callable[[], None], new_page: Callable[..., Page]
) -> None:
    client = prepare(app)
    page = new_page(**DESKTOP)
    sign_in(page)
    page.get_by_role("button", name="Pause sending of every campaign").click()
    expect(page.locator("#paused-everything")).to_contain_text(
        "Sending is paused for every campaign."
    )
    client.post(APPEALS_URL, json=supporter(email="waits@example.org"))
    work()
    assert status_of(app, "waits@example.org") == Status.QUEUED
    assert smtp.received == []
    page.goto("/manage/appeals?status=queued")
    expect(page.locator("#results")).to_contain_text("sending is paused for every campaign")

    page.goto("/manage")
    page.get_by_role("button", name="Resume sending").click()
    expect(page.locator("#sending-running")).to_be_visible()
    work()
    assert status_of(app, "waits@example.org") == Status.SENT


def test_export_the_csv(
    app: Any, work: Callable[[], None], new_page: Callable[..., Page], tmp_path: Path
) -> None:
    client = prepare(app)
    for n, country in enumerate(("GB", "DE", "DE")):
        client.post(APPEALS_URL, json=supporter(email=f"s{n}@example.org", country=country))
    work()
    page = new_page(**DESKTOP)
    sign_in(page, "/manage/appeals")
    page.get_by_label("Supporter country (code)").fill("de")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#matches")).to_contain_text("2 appeals match")

    def download() -> list[list[str]]:
        with page.expect_download() as started:
            page.get_by_role("button", name="Export these (CSV)").click()
        path = tmp_path / started.value.suggested_filename
        started.value.save_as(path)
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.reader(f))

    rows = download()
    assert len(rows) == 3 and "email" not in rows[0]
    assert {r[rows[0].index("country")] for r in rows[1:]} == {"DE"}
    page.get_by_label("With names, e-mail addresses and the relay's replies").check()
    rows = download()
    emails = sorted(r[rows[0].index("email")] for r in rows[1:])
    assert emails == ["s1@example.org", "s2@example.org"]


def test_a_manager_is_refused_the_admin_pages(app: Any, new_page: Callable[..., Page]) -> None:
    prepare(app)
    page = new_page(**DESKTOP)
    sign_in(page)
    expect(page.get_by_role("link", name="Relay")).to_have_count(0)
    for path in ("/admin", "/admin/users", "/admin/diplomats", "/admin/audit"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        expect(page.locator("main")).not_to_contain_text("SMTP host")
        expect(page.locator("h1")).to_be_visible()


def test_the_console_on_a_phone(
    app: Any, work: Callable[[], None], new_page: Callable[..., Page], tmp_path: Path
) -> None:
    client = prepare(app)
    for n in range(3):
        client.post(APPEALS_URL, json=supporter(email=f"phone{n}@example.org"))
    page = new_page(**PHONE)
    sign_in(page)
    for path in ("/manage", "/manage/appeals", "/manage/appeals/1", "/manage/mail"):
        page.goto(path)
        expect(page.locator("h1")).to_be_visible()
        no_horizontal_scroll(page)
    page.goto("/manage")
    page.screenshot(path=artefacts(tmp_path) / "console-overview-phone.png", full_page=True)
    page.goto("/manage/appeals")
    # The table scrolls inside its own box; its buttons keep their words on one line.
    box = page.locator("#results").locator("xpath=..")
    assert page.evaluate("(e) => e.scrollWidth > e.clientWidth", box.element_handle())
    for name in ("hold", "cancel…"):
        button = page.locator("#results").get_by_text(name, exact=True).first
        button.scroll_into_view_if_needed()
        size = button.bounding_box()
        assert size is not None and size["width"] > size["height"] < 40, (name, size)


def test_the_overview_without_javascript(app: Any, new_page: Callable[..., Page]) -> None:
    client = prepare(app)
    client.post(APPEALS_URL, json=supporter(email="nojs@example.org"))
    page = new_page(java_script_enabled=False, **DESKTOP)
    sign_in(page)
    expect(page.locator('#counts [data-status="queued"] strong')).to_have_text("1")
    page.get_by_role("link", name="Refresh").click()
    expect(page.locator("h1")).to_have_text("Send queue")
    # Cancelling asks first, on a page of its own.
    page.goto("/manage/appeals")
    page.get_by_role("link", name="cancel…").click()
    expect(page.locator("#confirm-what")).to_contain_text("This will cancel 1 appeal")
    page.get_by_role("button", name="Yes, cancel 1 appeal").click()
    expect(page.locator(".flash.ok")).to_have_text("Cancel: 1 appeal.")
    assert status_of(app, "nojs@example.org") == Status.CANCELLED
