"""Send it yourself (campaign/selfsend.py): the mailto, Gmail and Outlook links built
from a letter, read back with urllib; hostile input that must stay text; the switch to
a short link past each client's limit; "I sent it myself" through the real routes
(CSRF, a bad channel, one report per appeal or browser, the per-client limit); the
separate count in the console and on the campaign page; and in Chromium: the links on
the preview, the copy button through the real clipboard, a long letter's short links,
and a report that the console shows."""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from campaign import progress, selfsend
from campaign.console import overview
from campaign.db import db
from campaign.letters import Letter, Recipient
from campaign.models import Appeal, Role, SelfReport, Status
from campaign.tokens import confirmation_token
from campaign.users import create_user
from helpers import APPEALS_URL, CHROMIUM, form_fields, log_in, supporter

PAGE = "/c/pavlov-extradition"
REPORT = "/c/pavlov-extradition/self-sent"
MINISTER = Recipient("Sr. D. Alberto Ruiz-Gallardón", "ministro@mju.es")
EMBASSY = Recipient("Embajada de España", "emb.londres+ua@maec.es")


def letter(
    text: str = "Dear Minister,\n\nPlease act.\n", subject: str = "Free Mr Pavlov"
) -> Letter:
    return Letter(subject=subject, text=text, html="", to=(MINISTER,), cc=(EMBASSY,))


def fields(url: str) -> dict[str, list[str]]:
    """The query of a link as a mail program reads it: every field, blank ones too."""
    return parse_qs(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


# --- The links ---------------------------------------------------------------------------


def test_each_link_exactly() -> None:
    links = selfsend.links_for(letter())
    body_crlf = "Dear%20Minister%2C%0D%0A%0D%0APlease%20act.%0D%0A"
    body_lf = "Dear%20Minister%2C%0A%0APlease%20act.%0A"
    assert links.link("mailto").href == (
        "mailto:ministro@mju.es?cc=emb.londres%2Bua@maec.es"
        f"&subject=Free%20Mr%20Pavlov&body={body_crlf}"
    )
    assert links.link("gmail").href == (
        "https://mail.google.com/mail/?view=cm&fs=1&to=ministro@mju.es"
        f"&cc=emb.londres%2Bua@maec.es&su=Free%20Mr%20Pavlov&body={body_lf}"
    )
    assert links.link("outlook").href == (
        "https://outlook.office.com/mail/deeplink/compose?to=ministro@mju.es"
        f"&cc=emb.londres%2Bua@maec.es&subject=Free%20Mr%20Pavlov&body={body_lf}"
    )
    assert all(link.full for link in links.links) and not links.copy_first


HOSTILE_NAME = "Ana\r\nBcc: spy@example.net"
HOSTILE_TEXT = (
    "Dear Minister,\r\n"
    "&bcc=spy@example.net&to=spy@example.net #top %41%0D%0Acc: spy@example.net\r"
    "<script>alert(1)</script> a+b=c? 50% "
    "\u202eevil\u202c \u00e9\u0301 \U0001f54a\ufe0f \u05e9\u05dc\u05d5\u05dd \u0416\n"
    f"{HOSTILE_NAME}\n"
)


@pytest.mark.parametrize("channel", ["mailto", "gmail", "outlook"])
def test_hostile_text_stays_text(channel: str) -> None:
    """Whatever the supporter typed comes back, byte for byte, as the body; it adds no
    field, no recipient, no fragment, and no line break outside the body."""
    link = selfsend.links_for(letter(HOSTILE_TEXT, subject=f"Free Mr Pavlov {HOSTILE_NAME}"))
    url = link.link(channel).href
    parts = urlsplit(url)
    assert parts.fragment == "" and "#" not in url
    assert not re.search(r"[\s<>\"'\\]", url), "a raw space, quote or bracket in the link"
    got = fields(url)
    subject_key = {"mailto": "subject", "gmail": "su", "outlook": "subject"}[channel]
    extra = {"gmail": {"view", "fs", "to"}, "outlook": {"to"}, "mailto": set()}[channel]
    assert set(got) == {"cc", subject_key, "body"} | extra
    assert all(len(values) == 1 for values in got.values()), "a field given twice"
    newline = "\r\n" if channel == "mailto" else "\n"
    assert got["body"] == [re.sub(r"\r\n|\r|\n", newline, HOSTILE_TEXT)]
    assert got[subject_key] == ["Free Mr Pavlov Ana Bcc: spy@example.net"]  # one line
    assert got["cc"] == ["emb.londres+ua@maec.es"]
    to = unquote(parts.path) if channel == "mailto" else got["to"][0]
    assert to == "ministro@mju.es"


def test_a_lone_surrogate_becomes_a_replacement_character() -> None:
    url = selfsend.links_for(letter("a\ud800b")).link("gmail").href
    assert "body=a%EF%BF%BDb" in url


def test_only_plain_addresses_go_into_links() -> None:
    plain = selfsend.plain_address
    assert plain("Emb.Londres+UA@MAEC.ES") == "Emb.Londres+UA@maec.es"
    assert plain("consul@bücher.example") == "consul@xn--bcher-kva.example"
    for bad in (
        "a@b.example,spy@c.example",
        "a;spy@c.example",
        "Name <a@b.example>",
        "a@b.example?bcc=spy@c.example",
        "a@b.example&bcc=spy",
        "a b@c.example",
        "a%40@b.example",
        '"a"@b.example',
        "a@localhost",
        "a@-b.example",
        "",
    ):
        assert plain(bad) is None, bad
    odd = Recipient("Consulado", "consul@b.example?bcc=spy@c.example")
    links = selfsend.links_for(
        Letter(subject="S", text="T", html="", to=(MINISTER,), cc=(EMBASSY, odd))
    )
    assert links.left_out == (odd,)
    for link in links.links:
        assert "spy" not in link.href and "consul" not in link.href
        assert fields(link.href)["cc"] == ["emb.londres+ua@maec.es"]


def _text_of_length(build: Callable[..., str], length: int) -> str:
    """A body whose full link is exactly ``length`` characters long."""
    base = len(build(["ministro@mju.es"], ["emb.londres+ua@maec.es"], "Free Mr Pavlov", ""))
    return "x" * (length - base)


@pytest.mark.parametrize(
    ("channel", "limit"),
    [
        ("mailto", selfsend.MAILTO_MAX),
        ("gmail", selfsend.WEBMAIL_MAX),
        ("outlook", selfsend.WEBMAIL_MAX),
    ],
)
def test_past_its_limit_a_link_has_recipients_and_subject_only(channel: str, limit: int) -> None:
    build = partial(selfsend.compose_url, channel)
    at_limit = selfsend.links_for(letter(_text_of_length(build, limit))).link(channel)
    assert at_limit.full and len(at_limit.href) == limit
    over = selfsend.links_for(letter(_text_of_length(build, limit + 1)))
    short = over.link(channel)
    assert not short.full and over.copy_first
    got = fields(short.href)
    assert "body" not in got
    assert got["cc"] == ["emb.londres+ua@maec.es"]
    assert "Free Mr Pavlov" in got.get("subject", got.get("su", []))


def test_the_campaigns_letter_fits_webmail_but_not_mailto(app: Any) -> None:
    """The Urgent Action's own letter (about 3,300 characters with its Spanish version)
    goes whole into the webmail links; mailto gets the short link."""
    client = app.test_client()
    page = preview(client)
    assert 'id="copy-first"' in page
    assert 'data-full="false"' in _anchor(page, "send-mailto")
    assert 'data-full="true"' in _anchor(page, "send-gmail")
    assert 'data-full="true"' in _anchor(page, "send-outlook")


# --- The pages and the report route ------------------------------------------------------

NAME = "Zoë O'Brien"
SENTENCE = "Act now & free him #1 %41 <b>now</b>\nbcc=spy@example.net"


def preview(client: Any, **overrides: str) -> str:
    page = client.get(PAGE).get_data(as_text=True)
    data = form_fields(page, "")
    data.update(
        name=NAME,
        email="zoe@example.org",
        language="en",
        country="GB",
        message=SENTENCE,
        preview="y",
        **overrides,
    )
    response = client.post(PAGE, data=data)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return str(response.get_data(as_text=True))


def _anchor(page: str, element_id: str) -> str:
    found = re.search(rf'<a [^>]*id="{element_id}"[^>]*>', page)
    assert found, element_id
    return found.group(0)


def href(page: str, element_id: str) -> str:
    found = re.search(r'href="([^"]*)"', _anchor(page, element_id))
    assert found
    return html.unescape(found.group(1))


def reports(app: Any) -> list[tuple[str, int | None]]:
    with app.app_context():
        rows = db.session.execute(
            db.select(SelfReport.channel, SelfReport.appeal_id).order_by(SelfReport.id)
        )
        result = [(channel, appeal_id) for channel, appeal_id in rows]
        db.session.remove()
    return result


def report(client: Any, page: str, channel: str | None, **extra: str) -> Any:
    data = form_fields(page, REPORT)
    if channel is not None:
        data["channel"] = channel
    data.update(extra)
    return client.post(REPORT, data=data)


def test_the_preview_offers_the_links_and_a_report_counts_once(app: Any) -> None:
    client = app.test_client()
    page = preview(client)
    gmail = fields(href(page, "send-gmail"))
    assert NAME in gmail["body"][0] and SENTENCE in gmail["body"][0]
    assert gmail["to"] == ["ministro@mju.es"]
    assert 'target="_blank" rel="noopener"' in _anchor(page, "send-outlook")
    assert href(page, "send-mailto").startswith("mailto:ministro@mju.es?subject=")
    assert 'id="self-letter" readonly' in page  # the letter to copy without JavaScript

    answer = report(client, page, "gmail")
    assert answer.status_code == 200
    assert 'id="self-sent-thanks"' in answer.get_data(as_text=True)
    again = report(client, page, "mailto")  # pressed twice, or back and again
    assert 'id="self-sent-before"' in again.get_data(as_text=True)
    assert reports(app) == [("gmail", None)]

    with app.app_context():
        app.extensions.pop("self_sent_counts", None)
        assert progress.self_sent_count("pavlov-extradition") == 1
        assert progress.sent_count("pavlov-extradition") == 0
        db.session.remove()
    campaign_page = client.get(PAGE).get_data(as_text=True)
    assert 'id="self-sent-count"' in campaign_page
    assert "1 supporter sent it from their own mailbox" in campaign_page
    assert 'id="sent-count"' not in campaign_page  # nothing was delivered by us


def test_a_report_without_the_pages_csrf_token_is_refused(app: Any) -> None:
    client = app.test_client()
    preview(client)
    answer = client.post(REPORT, data={"channel": "gmail"})
    assert answer.status_code == 400
    assert reports(app) == []


@pytest.mark.parametrize("channel", [None, "fax", "gmail&bcc=x", ""])
def test_a_bad_channel_says_what_to_do(app: Any, channel: str | None) -> None:
    client = app.test_client()
    page = preview(client)
    answer = report(client, page, channel)
    assert answer.status_code == 422
    text = answer.get_data(as_text=True)
    assert "Please choose how you sent the letter." in text
    assert 'name="channel"' in text  # the choice again, to answer
    assert reports(app) == []


def test_a_report_from_the_confirmation_page_is_that_appeals_and_leaves_it_waiting(
    app: Any,
) -> None:
    client = app.test_client()
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        appeal_id, token = appeal.id, confirmation_token(appeal)
        db.session.remove()
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    assert fields(href(page, "send-outlook"))["body"][0].startswith("Sr. Ministro")
    assert form_fields(page, REPORT)["token"] == token

    answer = report(client, page, "outlook")
    assert answer.status_code == 200
    text = answer.get_data(as_text=True)
    assert 'id="self-sent-appeal"' in text  # nothing went in their name
    assert f'href="/confirm/{token}"' in text
    other = app.test_client()  # one report per appeal, not per browser
    answer = report(other, other.get(f"/confirm/{token}").get_data(as_text=True), "copy")
    assert 'id="self-sent-before"' in answer.get_data(as_text=True)
    assert reports(app) == [("outlook", appeal_id)]
    with app.app_context():
        assert db.session.get(Appeal, appeal_id).status == Status.AWAITING_CONFIRMATION
        db.session.remove()

    # They may still have us send it too: both are counted, each as what it is.
    confirm = form_fields(client.get(f"/confirm/{token}").get_data(as_text=True), "")
    confirm["submit"] = "y"
    assert client.post(f"/confirm/{token}", data=confirm).status_code == 200
    with app.app_context():
        mine = next(c for c in overview().campaigns if c.slug == "pavlov-extradition")
        assert (mine.self_sent, mine.self_sent_also_ours) == (1, 1)
        assert mine.counts[Status.QUEUED] + mine.counts[Status.SENT] == 1
        db.session.remove()


def test_a_token_of_another_campaign_or_none_makes_a_campaign_report(app: Any) -> None:
    client = app.test_client()
    page = preview(client)
    assert report(client, page, "copy", token="not-a-token").status_code == 200
    assert reports(app) == [("copy", None)]


def test_reports_share_the_per_client_limit(app: Any) -> None:
    app.config["RATELIMIT_APPEALS"] = "2 per minute"
    browsers = [app.test_client() for _ in range(3)]  # each may report once
    pages = [preview(client) for client in browsers]  # previews cost nothing
    for n, (client, page) in enumerate(zip(browsers, pages, strict=True)):
        assert report(client, page, "mailto").status_code == (200 if n < 2 else 429), n
    assert len(reports(app)) == 2


def test_the_console_shows_self_sent_apart_from_sent(app: Any) -> None:
    client = app.test_client()
    report(client, preview(client), "gmail")
    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, "correct horse battery staple")
        db.session.remove()
    staff = app.test_client()
    log_in(staff, "manager@example.org", "correct horse battery staple")
    page = staff.get("/manage").get_data(as_text=True)
    assert re.search(r'data-self-sent="pavlov-extradition">1<', page)
    assert 'data-campaign-status="sent"' not in page  # no appeal was sent by us


# --- In Chromium -------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("REQUIRE_BROWSER"),
    reason=f"{CHROMIUM} is not installed",
)
if os.path.exists(CHROMIUM) or os.environ.get("REQUIRE_BROWSER"):
    import test_browser as shared  # its fixtures
    from playwright.sync_api import BrowserContext, Page, Route, expect
    from test_accessibility import severe_violations

    browser = shared.browser
    live_server = shared.live_server

WEBMAIL = ("mail.google.com", "outlook.office.com")


@pytest.fixture
def open_page(browser: Any, live_server: str) -> Iterator[Any]:
    """A page that reaches the live server; a webmail compose link opened from it is
    answered here by a stub (nothing leaves the machine) and its URL kept, with the
    Referer it carried; any other address is aborted and fails the test."""
    contexts: list[BrowserContext] = []
    opened: list[str] = []
    referers: list[str | None] = []
    elsewhere: list[str] = []
    ours = urlsplit(live_server).netloc

    def guard(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.netloc == ours:
            route.continue_()
        elif url.hostname in WEBMAIL:
            opened.append(route.request.url)
            referers.append(route.request.headers.get("referer"))
            route.fulfill(status=200, content_type="text/html", body="<title>compose</title>")
        else:
            elsewhere.append(route.request.url)
            route.abort()

    def make(**options: Any) -> Page:
        context = browser.new_context(base_url=live_server, **options)
        context.set_default_timeout(5_000)
        context.route("**/*", guard)
        contexts.append(context)
        return context.new_page()

    make.opened = opened  # type: ignore[attr-defined]
    make.referers = referers  # type: ignore[attr-defined]
    yield make
    for context in contexts:
        context.close()
    assert elsewhere == [], "the browser tried to reach another address"


def fill_and_preview(page: Page, sentence: str) -> None:
    page.goto(PAGE)
    page.get_by_label("Your name").fill(NAME)
    page.get_by_label("Your e-mail").fill("zoe@example.org")
    page.get_by_label("Language of the letter").select_option("en")
    page.get_by_label("Your country").select_option("GB")
    page.get_by_label("A sentence of your own").fill(sentence)
    page.get_by_role("button", name="Preview my appeal").click()
    expect(page.locator("#send-yourself")).to_be_visible()


def clipboard(page: Page) -> str:
    return str(page.evaluate("() => navigator.clipboard.readText()"))


CLIPBOARD = {"permissions": ["clipboard-read", "clipboard-write"]}


@needs_chromium
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_in_chromium_links_copy_and_report(app: Any, open_page: Any) -> None:
    page = open_page(**CLIPBOARD)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    fill_and_preview(page, "I ask you to act & to free him.")

    gmail = page.locator("#send-gmail")
    assert f"{NAME}\nUnited Kingdom" in fields(gmail.get_attribute("href") or "")["body"][0]
    expect(gmail).to_have_attribute("target", "_blank")
    expect(page.locator("#send-mailto")).to_have_attribute(
        "href", re.compile(r"^mailto:ministro@mju\.es\?")
    )
    expect(page.locator("#self-sent-form")).to_be_hidden()  # until a link or the copy is used

    page.get_by_role("button", name="Copy the letter").click()
    expect(page.locator("#copy-status")).to_have_text(
        "The letter is copied. Paste it into your message."
    )
    assert clipboard(page) == page.locator("#self-letter").input_value()
    assert "I ask you to act & to free him." in clipboard(page)
    expect(page.get_by_label("I copied the letter into a message")).to_be_checked()

    with page.context.expect_page() as popup:
        page.locator("#send-outlook").click()
    popup.value.wait_for_load_state()
    assert open_page.opened == [page.locator("#send-outlook").get_attribute("href")]
    assert open_page.referers == [None]  # our address (a confirm link's token) stays ours
    expect(page.get_by_label("Outlook", exact=True)).to_be_checked()
    assert severe_violations(page) == []  # axe-core, with the report form shown
    page.get_by_role("button", name="I sent it myself").click()
    expect(page.locator("#self-sent-thanks")).to_be_visible()
    assert severe_violations(page) == []
    assert reports(app) == [("outlook", None)]
    assert errors == []

    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, "correct horse battery staple")
        db.session.remove()
    staff = open_page()
    staff.goto("/manage")
    expect(staff).to_have_url(re.compile(r"/login\?next="))
    staff.get_by_label("E-mail").fill("manager@example.org")
    staff.get_by_label("Password").fill("correct horse battery staple")
    staff.get_by_role("button", name="Log in").click()
    expect(staff.locator('[data-self-sent="pavlov-extradition"]')).to_have_text("1")


@needs_chromium
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_in_chromium_a_long_letter_gets_short_links_and_is_copied_first(
    app: Any, open_page: Any
) -> None:
    page = open_page(**CLIPBOARD)
    fill_and_preview(page, "Ж" * 1000)  # 6,000 characters once percent-encoded
    expect(page.locator("#copy-first")).to_be_visible()
    gmail = page.locator("#send-gmail")
    expect(gmail).to_have_attribute("data-full", "false")
    url = gmail.get_attribute("href") or ""
    assert "body" not in fields(url) and fields(url)["to"] == ["ministro@mju.es"]
    expect(page.locator("#self-letter")).to_be_hidden()  # the button copies it

    with page.context.expect_page() as popup:
        gmail.click()  # the click copies the letter, then opens the short link
    popup.value.wait_for_load_state()
    expect(page.locator("#copy-status")).to_have_text(
        "The letter is copied. Paste it into your message."
    )
    assert "Ж" * 1000 in clipboard(page)
    assert open_page.opened == [url]
    expect(page.get_by_label("Gmail", exact=True)).to_be_checked()

    # Without JavaScript: the letter to copy by hand, and the report form, are there.
    plain = open_page(java_script_enabled=False)
    fill_and_preview(plain, "Ж" * 1000)
    expect(plain.locator("#self-letter")).to_have_value(re.compile("Ж" * 1000))
    expect(plain.locator("#self-letter")).to_be_visible()
    expect(plain.locator("#copy-letter")).to_be_hidden()
    plain.get_by_label("I copied the letter into a message").check()
    plain.get_by_role("button", name="I sent it myself").click()
    expect(plain.locator("#self-sent-thanks")).to_be_visible()
    assert reports(app) == [("copy", None)]
