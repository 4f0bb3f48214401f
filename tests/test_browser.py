"""The HTML pages in a real browser (headless Chromium through Playwright), against the
app served on 127.0.0.1 by werkzeug in a background thread. The browser talks to
nothing else: every request to another address is aborted and makes the test fail."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.serving import make_server

from campaign.db import db
from campaign.models import Appeal, Role, Status
from helpers import APPEALS_URL, CHROMIUM, CHROMIUM_ARGS, confirmation_token, supporter

if not os.path.exists(CHROMIUM):
    if os.environ.get("REQUIRE_BROWSER"):
        pytest.fail(f"REQUIRE_BROWSER is set but {CHROMIUM} is missing", pytrace=False)
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)

from playwright.sync_api import (  # noqa: E402 - only once we know there is a browser
    Browser,
    BrowserContext,
    Page,
    Route,
    expect,
    sync_playwright,
)

PAGE = "/c/pavlov-extradition"
NAME = "Zoë O'Brien"
EMAIL = "zoe@example.org"
SENTENCE = "I have read about Mr Pavlov's case and I ask you to act now."
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 800}}


# --- Server and browser ------------------------------------------------------------------


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The ``app`` fixture's Flask app on 127.0.0.1, on a free port, for this test only."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="live-server", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(browser: Browser, live_server: str) -> Iterator[Callable[..., Page]]:
    """Open a page in a fresh context that may reach the live server and nothing else."""
    contexts: list[BrowserContext] = []
    elsewhere: list[str] = []
    ours = urlsplit(live_server)

    def guard(route: Route) -> None:
        url = urlsplit(route.request.url)
        if (url.scheme, url.netloc) == (ours.scheme, ours.netloc):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def make(**options: Any) -> Page:
        context = browser.new_context(base_url=live_server, **options)
        context.set_default_timeout(5_000)
        context.route("**/*", guard)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()
    assert elsewhere == [], "the browser tried to reach another address"


def no_horizontal_scroll(page: Page) -> None:
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]",
    )
    assert widths[0] <= widths[1], f"page is wider than the screen: {widths}"


def appeal_statuses(app: Any) -> list[str]:
    with app.app_context():
        statuses = list(db.session.scalars(db.select(Appeal.status)))
        db.session.remove()
    return statuses


# --- Tests -------------------------------------------------------------------------------


def test_supporter_previews_sends_and_confirms_on_a_phone(
    app: Any, smtp: Any, work: Callable[[], None], new_page: Callable[..., Page], tmp_path: Path
) -> None:
    page = new_page(**PHONE)
    page.goto(PAGE)
    expect(page.locator("h1")).to_be_visible()
    no_horizontal_scroll(page)

    page.get_by_label("Your name").fill(NAME)
    page.get_by_label("Your e-mail").fill(EMAIL)
    page.get_by_label("Language of the letter").select_option(label="English")
    page.get_by_label("Your country").select_option(label="United Kingdom")
    page.get_by_label("A sentence of your own").fill(SENTENCE)
    page.screenshot(path=tmp_path / "1-form.png", full_page=True, scale="css")

    page.get_by_role("button", name="Preview my appeal").click()
    letter = page.locator("#letter-preview")
    expect(letter).to_contain_text("Dear Minister")
    expect(letter).to_contain_text(NAME)
    expect(letter).to_contain_text(SENTENCE)
    # The preview keeps what was typed, so sending needs only the tick.
    expect(page.get_by_label("Your name")).to_have_value(NAME)
    expect(page.get_by_label("A sentence of your own")).to_have_value(SENTENCE)
    no_horizontal_scroll(page)
    page.screenshot(path=tmp_path / "2-preview.png", full_page=True, scale="css")
    assert appeal_statuses(app) == []  # a preview stores nothing

    page.get_by_label("Send this appeal in my name").check()
    send = page.get_by_role("button", name="Send my appeal", exact=True)
    box = send.bounding_box()
    assert box is not None and box["height"] >= 40, f"send button too small to tap: {box}"
    send.click()
    expect(page.locator("h1")).to_have_text("Thank you")
    expect(page.locator("#next-step")).to_contain_text(EMAIL)
    no_horizontal_scroll(page)

    work()  # the confirmation e-mail, and nothing else
    assert [m.rcpt_tos for m in smtp.received] == [[EMAIL]]
    body = smtp.received[0].message.get_body(("plain",)).get_content()
    token = confirmation_token(body)

    page.goto(f"/confirm/{token}")
    confirm = page.get_by_role("button", name="Send my appeal")
    expect(confirm).to_be_visible()
    no_horizontal_scroll(page)
    page.screenshot(path=tmp_path / "3-confirm.png", full_page=True, scale="css")
    # Opening the link (as a mail scanner would) must not confirm.
    assert appeal_statuses(app) == [Status.AWAITING_CONFIRMATION]

    confirm.click()
    expect(page.locator("#confirmed")).to_be_visible()
    expect(page.locator("h1")).to_contain_text("your appeal is on its way")
    page.screenshot(path=tmp_path / "4-confirmed.png", full_page=True, scale="css")
    assert appeal_statuses(app) == [Status.QUEUED]

    work()
    assert len(smtp.received) == 2
    appeal_mail = smtp.received[1]
    assert "ministro@mju.es" in appeal_mail.rcpt_tos
    text = appeal_mail.message.get_body(("plain",)).get_content()
    assert text.startswith("Dear Minister,")
    assert NAME in text and SENTENCE in text
    assert appeal_mail.message["Reply-To"].addresses[0].display_name == NAME
    assert appeal_statuses(app) == [Status.SENT]


def test_invalid_form_shows_errors_and_keeps_what_was_typed(
    app: Any, smtp: Any, new_page: Callable[..., Page]
) -> None:
    page = new_page(**PHONE)
    page.goto(PAGE)
    page.get_by_label("Your name").fill(NAME)
    page.get_by_label("Your e-mail").fill("zoe@@example")
    page.get_by_label("Your country").select_option(label="United Kingdom")
    page.get_by_label("A sentence of your own").fill(SENTENCE)
    # No tick in the consent box.
    with page.expect_response(lambda r: r.request.method == "POST") as response:
        page.get_by_role("button", name="Send my appeal", exact=True).click()
    assert response.value.status == 422

    errors = page.get_by_role("alert")
    expect(errors).to_contain_text("Please check the form")
    expect(errors).to_contain_text("Please agree that we send this appeal in your name.")
    expect(page.locator("#email-error")).to_be_visible()
    expect(page.get_by_label("Your e-mail")).to_have_attribute("aria-invalid", "true")
    # Nothing typed is lost.
    expect(page.get_by_label("Your name")).to_have_value(NAME)
    expect(page.get_by_label("Your e-mail")).to_have_value("zoe@@example")
    expect(page.get_by_label("Your country")).to_have_value("GB")
    expect(page.get_by_label("A sentence of your own")).to_have_value(SENTENCE)
    expect(page.get_by_label("Send this appeal in my name")).not_to_be_checked()
    no_horizontal_scroll(page)

    assert appeal_statuses(app) == []
    assert smtp.received == []


def test_manager_logs_in_sees_counts_and_is_kept_out_of_admin(
    app: Any, new_page: Callable[..., Page]
) -> None:
    from campaign.users import create_user

    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, "correct horse battery")
        db.session.remove()
    client = app.test_client()
    for n in range(2):
        reply = client.post(APPEALS_URL, json=supporter(email=f"fan{n}@example.org"))
        assert reply.status_code == 202, reply.json

    page = new_page(**DESKTOP)
    page.goto("/manage")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fmanage$|/login\?next=/manage$"))
    page.get_by_label("E-mail").fill("manager@example.org")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()

    expect(page.locator("h1")).to_have_text("Send queue")
    assert urlsplit(page.url).path == "/manage"
    counts = page.locator("#counts")
    expect(counts.locator('[data-status="awaiting_confirmation"] strong')).to_have_text("2")
    for status in Status.ALL:
        expect(counts.locator(f'[data-status="{status}"]')).to_be_visible()
    expect(counts.locator('[data-status="sent"] strong')).to_have_text("0")
    expect(page.get_by_role("link", name="Relay")).to_have_count(0)  # no admin links

    response = page.goto("/admin")
    assert response is not None and response.status == 403
    # The app's own page, saying what the page is for, not Werkzeug's generic 403.
    expect(page).to_have_title("For admins only")
    expect(page.locator("main")).to_contain_text("admin")
