"""The supporter's pages for everyone, in a real browser (Debian's Chromium through
Playwright): axe-core finds no serious or critical violation, on a desktop and on a
390-pixel phone with no horizontal scroll; after a failed submit the focus is on an
error summary that names and links each field, with JavaScript and without; each
message is tied to its input, and required fields are marked.

axe-core comes from the PyPI package axe-playwright-python, which ships axe.min.js in
its wheel: ``pip install -e '.[test]'`` brings it with the rest, with no download at
test time and no Node. Playwright injects it from outside the page, so the app's
Content-Security-Policy (scripts from 'self' only) stays on while it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import test_browser
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect
from test_browser import DESKTOP, PAGE, PHONE

from helpers import confirmation_token

# The browser tests' fixtures: a live server and pages that may reach only it.
browser = test_browser.browser
live_server = test_browser.live_server
new_page = test_browser.new_page

SEVERE = ("serious", "critical")
REQUIRED = ("name", "email", "language", "country", "consent")
AXE = Axe()


def severe_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now."""
    results = AXE.run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(" ".join(node["target"]) for node in v["nodes"])
        for v in results.response["violations"]
        if v["impact"] in SEVERE
    ]


def check_page(page: Page, what: str) -> None:
    """No serious or critical axe finding, and no horizontal scroll at the viewport's width."""
    found = severe_violations(page)
    assert found == [], f"{what}: {found}"
    width = page.viewport_size["width"] if page.viewport_size else 0
    scroll = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll <= width, f"{what}: {scroll} px wide on a {width} px screen"


def test_axe_finds_what_it_should(new_page: Callable[..., Page]) -> None:
    """The check itself can fail: a page with a nameless field and no language."""
    page = new_page(**DESKTOP)
    page.set_content("<html><body><input type='text'><button></button></body></html>")
    found = " ".join(severe_violations(page))
    assert "label" in found and "html-has-lang" in found and "button-name" in found


@pytest.mark.parametrize("device", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_every_step_of_an_appeal_passes_axe(
    app: Any, smtp: Any, work: Callable[[], None], new_page: Callable[..., Page], device: Any
) -> None:
    page = new_page(**device)
    page.goto(PAGE)
    check_page(page, "campaign page")

    page.get_by_role("button", name="Send my appeal", exact=True).click()
    expect(page.locator("#errors")).to_be_focused()
    check_page(page, "campaign page with errors")

    # Hostile but valid input: long words must wrap, not widen the page.
    page.get_by_label("Your name").fill("Zoë " + "W" * 110)
    page.get_by_label("Your e-mail").fill("zoe@example.org")
    page.get_by_label("Your country").select_option("GB")
    page.get_by_label("A sentence of your own").fill("Ж" * 1000)
    page.get_by_role("button", name="Preview my appeal").click()
    expect(page.locator("#letter-preview")).to_contain_text("Ж" * 100)
    check_page(page, "preview")

    page.get_by_label("Send this appeal in my name").check()
    page.get_by_role("button", name="Send my appeal", exact=True).click()
    expect(page.locator("#next-step")).to_contain_text("zoe@example.org")
    check_page(page, "submitted page")

    work()
    token = confirmation_token(smtp.received[0].message.get_body(("plain",)).get_content())
    page.goto(f"/confirm/{token}")
    check_page(page, "confirm page")

    page.locator("summary").click()
    page.get_by_label("Your name").fill("")
    page.get_by_role("button", name="Preview my changes").click()
    expect(page.locator("#errors")).to_be_focused()
    check_page(page, "confirm page with errors")

    page.get_by_label("Your name").fill("Zoë O'Brien")
    page.get_by_role("button", name="Send my appeal").click()
    expect(page.locator("#confirmed")).to_be_visible()
    check_page(page, "confirmed page")

    page.goto(f"/confirm/{token}")  # used already
    check_page(page, "used link page")

    page.goto(f"{PAGE}/link")
    check_page(page, "link page")
    page.get_by_label("Your e-mail").fill("not an address")
    page.get_by_role("button", name="Send me the link again").click()
    expect(page.locator("#errors")).to_be_focused()
    check_page(page, "link page with errors")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_failed_submit_focuses_a_summary_that_links_each_field(
    app: Any, new_page: Callable[..., Page], javascript: bool
) -> None:
    page = new_page(**PHONE, java_script_enabled=javascript)
    page.goto(PAGE)
    for name in REQUIRED:
        field = page.locator(f"#{name}")
        expect(field).to_have_attribute("required", "")
        expect(page.locator(f"label[for={name}]")).to_contain_text("(required)")
    expect(page.locator("#message")).not_to_have_attribute("required", "")
    expect(page.locator("label[for=message]")).not_to_contain_text("(required)")

    page.get_by_label("Your e-mail").fill("zoe@@example")
    page.get_by_label("A sentence of your own").fill("Kept.\nEvery word.")
    page.get_by_role("button", name="Send my appeal", exact=True).click()

    summary = page.locator("#errors")
    expect(summary).to_be_focused()
    expect(page).to_have_title(re.compile(r"^Error: "))
    links = summary.get_by_role("link")
    expect(links).to_have_count(4)  # name, e-mail, country, consent
    for name, label in (
        ("name", "Your name"),
        ("email", "Your e-mail"),
        ("country", "Your country"),
        ("consent", "Send this appeal in my name"),
    ):
        link = summary.locator(f'a[href="#{name}"]')
        expect(link).to_contain_text(label)
        message = page.locator(f"#{name}-error")
        expect(message).to_be_visible()
        expect(link).to_contain_text(message.inner_text())
        field = page.locator(f"#{name}")
        expect(field).to_have_attribute("aria-invalid", "true")
        described = (field.get_attribute("aria-describedby") or "").split()
        assert f"{name}-error" in described, (name, described)
        for part in described:  # every id it names exists
            expect(page.locator(f"#{part}")).to_have_count(1)
    expect(page.locator("#language")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("A sentence of your own")).to_have_value("Kept.\nEvery word.")

    # From the keyboard: the first Tab reaches the first link, which takes you to the field.
    page.keyboard.press("Tab")
    expect(links.first).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#name")).to_be_focused()
    summary.locator('a[href="#country"]').click()
    expect(page.locator("#country")).to_be_focused()


def test_over_the_limit_the_form_keeps_what_was_typed_and_says_when(
    app: Any, new_page: Callable[..., Page]
) -> None:
    app.config["RATELIMIT_APPEALS"] = "1 per minute"
    page = new_page(**PHONE)
    for email in ("first@example.org", "second@example.org"):
        page.goto(PAGE)
        page.get_by_label("Your name").fill("Zoë O'Brien")
        page.get_by_label("Your e-mail").fill(email)
        page.get_by_label("Your country").select_option("GB")
        page.get_by_label("A sentence of your own").fill("Please act.")
        page.get_by_label("Send this appeal in my name").check()
        with page.expect_response(lambda r: r.request.method == "POST") as response:
            page.get_by_role("button", name="Send my appeal", exact=True).click()
    assert response.value.status == 429
    retry = int(response.value.headers["retry-after"])
    assert 0 < retry <= 60

    summary = page.locator("#errors")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Please try again later")
    expect(summary).to_contain_text("try again in")
    expect(page.get_by_label("Your name")).to_have_value("Zoë O'Brien")
    expect(page.get_by_label("Your e-mail")).to_have_value("second@example.org")
    expect(page.get_by_label("Your country")).to_have_value("GB")
    expect(page.get_by_label("A sentence of your own")).to_have_value("Please act.")
    expect(page.get_by_label("Send this appeal in my name")).to_be_checked()
    check_page(page, "the page over the limit")
