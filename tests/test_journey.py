"""A supporter's whole journey in a real browser, in two interface languages: fill in the
form, preview, send, take the link from the mail that arrived at the SMTP server,
confirm, follow the appeal on its status page, and download the printable letter.

One browser speaks French (its Accept-Language); the other is set to English and
switches the page to German. Each writes a letter in another language than it reads:
pages and mail must speak the supporter's language, the letter its own.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_browser import PHONE, appeal_statuses, browser, live_server, new_page  # noqa: F401

from campaign.models import Status
from helpers import confirmation_token

pytest.importorskip("pypdf")
from playwright.sync_api import Page, expect  # noqa: E402
from pypdf import PdfReader  # noqa: E402

JOURNEYS = [
    pytest.param(
        {
            "browser_locale": "fr-FR",
            "switch_to": None,
            "ui": "fr",
            "letter": "es",
            "salutation": "Sr. Ministro",
            "name": "Chloé Dubois",
            "email": "chloe@example.org",
        },
        id="fr-browser-spanish-letter",
    ),
    pytest.param(
        {
            "browser_locale": "en-US",
            "switch_to": "de",
            "ui": "de",
            "letter": "en",
            "salutation": "Dear Minister",
            "name": "Jürgen Weiß",
            "email": "juergen@example.org",
        },
        id="de-switched-english-letter",
    ),
]


def _lang(page: Page) -> str:
    return str(page.evaluate("() => document.documentElement.lang"))


@pytest.mark.parametrize("journey", JOURNEYS)
def test_a_supporter_writes_confirms_follows_and_prints_in_their_language(
    app: Any,
    smtp: Any,
    work: Callable[[], None],
    new_page: Callable[..., Page],  # noqa: F811
    tmp_path: Path,
    journey: dict[str, Any],
) -> None:
    page = new_page(locale=journey["browser_locale"], **PHONE)
    page.goto("/c/pavlov-extradition")
    if journey["switch_to"]:
        assert _lang(page) == "en"
        page.locator(f'nav.languages a[hreflang="{journey["switch_to"]}"]').click()
    ui = journey["ui"]
    assert _lang(page) == ui
    english_send = "Send my appeal"
    send_label = page.locator("#send").get_attribute("value") or page.locator("#send").inner_text()
    assert send_label.strip() and send_label.strip() != english_send  # translated

    page.locator("#name").fill(journey["name"])
    page.locator("#email").fill(journey["email"])
    page.locator("#language").select_option(journey["letter"])
    page.locator("#country").select_option("FR")
    page.locator("#preview").click()
    letter = page.locator("#letter-preview")
    expect(letter).to_contain_text(journey["salutation"])
    expect(letter).to_contain_text(journey["name"])
    assert _lang(page) == ui  # the page still speaks the supporter's language
    assert appeal_statuses(app) == []  # a preview stores nothing

    page.locator("#consent").check()
    page.locator("#send").click()
    expect(page.locator("h1")).to_be_visible()
    assert _lang(page) == ui
    assert appeal_statuses(app) == [Status.AWAITING_CONFIRMATION]

    work()  # the confirmation mail, in the supporter's language
    [mail] = smtp.received
    assert mail.rcpt_tos == [journey["email"]]
    body = mail.message.get_body(("plain",)).get_content()
    token = confirmation_token(body)

    page.goto(f"/confirm/{token}")
    assert _lang(page) == ui
    button = page.locator("#submit")
    label = (button.get_attribute("value") or button.inner_text()).strip()
    assert label and label != english_send
    assert label in body  # the mail names the button the supporter will see
    button.click()
    expect(page.locator("#confirmed")).to_be_visible()
    assert appeal_statuses(app) == [Status.QUEUED]

    # The printable letter, for the addressees without e-mail (the Chief Prosecutor).
    with page.expect_download() as download:
        page.locator("#letter-pdf").click()
    pdf = PdfReader(io.BytesIO(Path(download.value.path()).read_bytes()))
    text = " ".join(p.extract_text() for p in pdf.pages)
    assert journey["name"] in text
    assert journey["salutation"] in text

    page.locator("#status-link").click()
    expect(page.locator("#status")).to_be_visible()
    assert _lang(page) == ui
    work()  # the appeal goes out
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-status", Status.SENT)
    sent = [m for m in smtp.received if "ministro@mju.es" in m.rcpt_tos]
    assert len(sent) == 1
    assert journey["salutation"] in sent[0].message.get_body(("plain",)).get_content()
    page.screenshot(path=tmp_path / f"status-{ui}.png", full_page=True, scale="css")
