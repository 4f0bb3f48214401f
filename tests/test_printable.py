"""Every addressee by every channel, and the printable letter (a real PDF, read back
with pypdf): from the preview, from the confirmation page, and for a confirmed appeal."""

from __future__ import annotations

import html
import io
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pypdf import PdfReader
from werkzeug.serving import make_server

from campaign.campaigns import get_campaign
from campaign.db import db
from campaign.letters import COPY_RULE
from campaign.models import Appeal, Diplomat, Status
from campaign.retention import erase_supporter
from helpers import CHROMIUM, CHROMIUM_ARGS, csrf_token, supporter

PAGE = "/c/pavlov-extradition"
PDF = "/c/pavlov-extradition/letter.pdf"
MINISTER = ["Sr. D. Alberto Ruiz-Gallardón", "Ministerio de Justicia", "Calle Bolsa 8"]
PROSECUTOR = ["Sr. D. Javier Zaragoza Aguado", "Fiscalía General del Estado", "Calle Prim 12"]
EMBASSY = {
    "name": "Embassy of Spain in London",
    "email": "emb.londres@maec.test",
    "fax": "+44 20 7259 5392",
    "postal_address": "39 Chesham Place\nLondon SW1X 8SB\nUnited Kingdom",
}


def form(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Ana García",
        "email": "ana@example.org",
        "language": "en",
        "country": "GB",
        "message": "Please act now.",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def post(client: Any, url: str, **overrides: Any) -> Any:
    data = form(**overrides)
    data["csrf_token"] = csrf_token(client.get(PAGE).get_data(as_text=True))
    return client.post(url, data=data)


def preview_letter(client: Any, **overrides: Any) -> str:
    reply = post(client, PAGE, preview="Preview my appeal", **overrides)
    assert reply.status_code == 200
    found = re.search(
        r'<div class="letter" id="letter-preview">(.*?)</div>', reply.get_data(as_text=True), re.S
    )
    assert found, "no letter preview in the page"
    return html.unescape(found.group(1))


def pages(reply: Any) -> list[str]:
    assert reply.status_code == 200, reply.get_data(as_text=True)[:2000]
    assert reply.mimetype == "application/pdf"
    assert reply.data.startswith(b"%PDF-")
    return [page.extract_text() for page in PdfReader(io.BytesIO(reply.data)).pages]


def flat(text: str) -> str:
    """Words in order, whatever the lines: the PDF wraps where the e-mail does not."""
    return " ".join(text.split())


SALUTATIONS = ("Dear Minister", "Sr. Ministro")
COPY_LINES = ("Copies to:", "Copias a:")
RULE = COPY_RULE.strip()


def in_order(letter: str, page: str, skip: tuple[str, ...] = ()) -> bool:
    """Every line of the e-mail's letter is on the page, in order, but the rule above
    its Spanish version and, when ``skip`` says so, the lines that name whom it is
    written to (its salutation, its copy line)."""
    text, at = flat(page), 0
    for line in letter.split("\n"):
        if not line.strip() or line == RULE or line.startswith(skip):
            continue
        found = text.find(flat(line), at)
        if found < 0:
            return False
        at = found + len(flat(line))
    return True


def letters(texts: list[str], name: str = "Ana García") -> list[list[str]]:
    """The pages, by addressee: a letter's first page opens with the sender and the
    date; the pages after it (its Spanish version, or where it runs on) do not."""
    grouped: list[list[str]] = []
    for text in texts:
        lines = text.split("\n")
        if lines[0] == name and re.search(r"\b20\d\d$", lines[2]):
            grouped.append([text])
        else:
            assert grouped, f"the first page is no letter's: {text[:200]!r}"
            grouped[-1].append(text)
    return grouped


def add_embassy(app: Any, country: str = "GB") -> None:
    with app.app_context():
        db.session.add(Diplomat(target_state="ES", country=country, **EMBASSY))
        db.session.commit()


def stored(app: Any) -> list[tuple[str, str, str | None]]:
    with app.app_context():
        return [(a.status, a.name, a.message) for a in db.session.scalars(db.select(Appeal))]


# --- The printable letter from the preview -----------------------------------------------


def test_pdf_has_the_letter_and_one_page_per_addressee_with_postal_block_and_fax(
    app, client, smtp, work
):
    add_embassy(app)
    letter = preview_letter(client)  # the e-mail's text: the preview is the sent letter
    english, spanish = letter.split(COPY_RULE)
    reply = post(client, PDF)
    assert reply.headers["Content-Disposition"] == (
        'attachment; filename="letter-pavlov-extradition.pdf"'
    )
    assert reply.headers["Cache-Control"] == "no-store"
    minister, prosecutor, embassy = letters(pages(reply))

    # The main addressee's letter is the e-mail's, word for word: the English letter on
    # its page, the Spanish version the ministry reads on the next.
    assert letter.startswith("Dear Minister,")
    assert in_order(letter, "\n".join(minister))
    assert not in_order(letter + "\nA line the PDF does not have.", "\n".join(minister))
    assert flat(english) in flat(minister[0])
    assert flat(spanish) == flat(minister[1])
    for pages_, block, fax, salutations in [
        (minister, MINISTER, "+34 91 390 22 77", ["Dear Minister,", "Sr. Ministro:"]),
        (
            prosecutor,
            PROSECUTOR,
            "+34 91 397 32 86",
            ["Dear Chief Prosecutor,", "Sr. Fiscal Jefe:"],
        ),
        (embassy, ["Embassy of Spain in London", "39 Chesham Place"], EMBASSY["fax"], []),
    ]:
        # One sheet for the letter, one for its Spanish version.
        assert len(pages_) == 2
        first, second = (page.split("\n") for page in pages_)
        # The sender, the date, the postal block and the fax, then the letter to them.
        assert first[:2] == ["Ana García", "United Kingdom"]
        assert re.fullmatch(r"\d{1,2} [A-Z][a-z]+ 20\d\d", first[2]), first[2]
        for line in block:
            assert line in first, (line, first)
        assert "28012 Madrid" in first or "28071 Madrid" in first or "London SW1X 8SB" in first
        assert f"Fax: {fax}" in first
        assert first.index(f"Fax: {fax}") > first.index(block[0])
        assert in_order(letter, "\n".join(pages_), skip=SALUTATIONS + COPY_LINES)
        assert "Please act now. Yours sincerely, Ana García United Kingdom" in flat(pages_[0])
        assert second[0] == spanish.split("\n")[0]  # "Versión en español de esta carta:"
        if salutations:
            assert salutations[0] in first and salutations[1] in second
    # An ambassador is greeted as one; each letter's copy line names the others.
    assert "Your Excellency," in embassy[0].split("\n")
    assert "Excelencia:" in embassy[1].split("\n")
    assert "Copies to: Sr. D. Javier Zaragoza Aguado, Chief Prosecutor" in flat(minister[0])
    assert "Embassy of Spain in London" in flat(minister[0]).split("Copies to:")[1]
    assert "Sr. D. Alberto Ruiz-Gallardón, Minister of Justice" in flat(prosecutor[0])
    assert "Sr. D. Alberto Ruiz-Gallardón, Ministro de Justicia" in flat(prosecutor[1])

    # Nothing was stored, and nothing sent.
    assert stored(app) == []
    work()
    assert smtp.received == []


def test_a_spanish_letter_is_one_page_per_addressee_each_greeted_in_spanish(app, client):
    add_embassy(app)
    letter = preview_letter(client, language="es")
    assert COPY_RULE not in letter  # no version in another language to carry
    texts = pages(post(client, PDF, language="es"))
    assert [len(pages_) for pages_ in letters(texts)] == [1, 1, 1]
    minister, prosecutor, embassy = texts
    assert flat(letter) in flat(minister)
    assert "Sr. Fiscal Jefe:" in prosecutor.split("\n")
    assert "Fiscal Jefe de la Audiencia Nacional" in prosecutor.split("\n")
    assert "Excelencia:" in embassy.split("\n")
    for page in texts:
        assert in_order(letter, page, skip=SALUTATIONS + COPY_LINES)
        assert re.search(r"\n\d{1,2} de [a-z]+ de 20\d\d\n", page)  # the date, in Spanish


@pytest.mark.parametrize(
    "name",
    [
        "Zoë Ἀλεξάνδρα Παπαδοπούλου",
        "Александра Павлова-Ñúñez",
        "Łukasz Żółć Ærø Şahin Nguyễn",
    ],
)
def test_a_unicode_name_renders(app, client, name):
    grouped = letters(pages(post(client, PDF, name=name)), name=name)
    assert len(grouped) == 2
    for first, second in grouped:
        assert first.split("\n")[0] == name  # the sender
        assert f"Yours sincerely, {name} United Kingdom" in flat(first)
        assert f"Atentamente, {name} Reino Unido" in flat(second)


def test_right_to_left_and_combining_text_renders(app, client):
    message = "אנא פעלו עכשיו. أرجو أن تتحركوا الآن. Z̤̈a̸l̴g̷o"
    texts = pages(post(client, PDF, name="Dana Cohen", message=message))
    assert len(letters(texts, name="Dana Cohen")) == 2
    assert "אנא פעלו עכשיו" in texts[0]
    assert "Dana Cohen" in texts[0]


def test_a_character_the_font_lacks_is_a_clear_422_and_keeps_what_was_typed(app, client):
    reply = post(client, PDF, name="王伟 Wang Wei")
    assert reply.status_code == 422
    body = html.unescape(reply.get_data(as_text=True))
    assert "The printable letter cannot show these characters: 王 伟." in body
    assert 'value="王伟 Wang Wei"' in body
    # The page's form goes back to the campaign, not to the PDF.
    assert f'<form method="post" action="{PAGE}" novalidate>' in body


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "A" * 60_000, "at most 120 characters"),
        ("message", "Free him. " * 6_000, "at most 1000 characters"),
        ("name", "Ana\r\nBcc: victim@example.com", "single line without control characters"),
        ("name", "Ana \u202egnissim", "single line without control characters"),
        ("name", "Ministro <ministro@mju.es>", "may not contain"),
        ("email", "ana@example.org\r\nBcc: x@example.com", ""),
        ("country", "XX", "Unknown country"),
        ("language", "xx", "choose one of"),
    ],
    ids=[
        "60k-name",
        "60k-message",
        "crlf-name",
        "rtl-override",
        "address-name",
        "crlf-email",
        "country",
        "language",
    ],
)
def test_hostile_fields_are_a_422_not_a_500(app, client, smtp, work, field, value, message):
    reply = post(client, PDF, **{field: value})
    assert reply.status_code == 422
    assert reply.mimetype == "text/html"
    body = reply.get_data(as_text=True)
    assert 'id="errors"' in body
    assert message in body
    assert stored(app) == []
    work()
    assert smtp.received == []


@pytest.mark.parametrize("field", ["name", "message"])
def test_a_100_kb_field_is_refused_whole_with_a_clear_message(app, client, field):
    reply = post(client, PDF, **{field: "A" * 100_000})
    assert reply.status_code == 413  # MAX_CONTENT_LENGTH, before any field is read
    assert "That was more text than we can take." in reply.get_data(as_text=True)
    assert stored(app) == []


def test_long_unbroken_and_many_line_messages_still_print(app, client):
    unbroken = "Ж" * 1000
    texts = pages(post(client, PDF, message=unbroken))
    assert [len(pages_) for pages_ in letters(texts)] == [2, 2]
    assert "".join(texts).replace("\n", "").count(unbroken) == 4  # two letters, two versions

    lines = "\n".join(["Free him."] * 99)
    texts = pages(post(client, PDF, message=lines, language="es"))
    grouped = letters(texts)
    # Too long for one sheet: each addressee's letter runs on, then the next one starts
    # on a sheet of its own.
    assert len(grouped) == 2
    assert all(len(pages_) > 1 for pages_ in grouped)
    assert "Sr. Fiscal Jefe:" in grouped[1][0].split("\n")
    assert sum(text.count("Free him.") for text in texts) == 2 * 99


def test_the_pdf_needs_the_forms_csrf_token(app, client):
    client.get(PAGE)
    reply = client.post(PDF, data=form())
    assert reply.status_code == 400
    assert reply.mimetype == "text/html"


# --- Addressee blocks on the page and in the preview ---------------------------------------


def blocks(body: str) -> dict[str, str]:
    found = re.findall(
        r'<article class="addressee" id="addressee-([^"]+)"[^>]*>(.*?)</article>', body, re.S
    )
    return {key: flat(html.unescape(re.sub(r"<[^>]+>", " ", text))) for key, text in found}


def test_the_campaign_page_shows_each_addressee_by_every_channel(app, client):
    body = client.get(PAGE).get_data(as_text=True)
    shown = blocks(body)
    with app.app_context():
        campaign = get_campaign("pavlov-extradition")
    assert list(shown) == [a.key for a in campaign.addressees] == ["minister", "chief-prosecutor"]
    for addressee, label in zip(campaign.addressees, ["Addressee", "Copy"], strict=True):
        email = addressee.email or "none; send the printable letter by post or fax."
        assert shown[addressee.key] == flat(
            f"{label} {addressee.name} {addressee.title_in('en')} {addressee.organisation} "
            f"{addressee.postal_address} Fax: {addressee.fax} E-mail: {email} "
            f"Salutation: {addressee.salutation_in('en')}"
        )
    # The seed's channels, as the Urgent Action gives them.
    assert "Calle Bolsa 8 28012 Madrid" in shown["minister"]
    assert "Fax: +34 91 390 22 77 E-mail: ministro@mju.es" in shown["minister"]
    assert "Calle Prim 12 28071 Madrid" in shown["chief-prosecutor"]
    assert "Fax: +34 91 397 32 86 E-mail: none;" in shown["chief-prosecutor"]
    assert "Salutation: Dear Chief Prosecutor" in shown["chief-prosecutor"]
    assert 'id="no-diplomats"' not in body  # no country chosen yet: nothing to say
    assert 'formaction="/c/pavlov-extradition/letter.pdf"' in body


def test_the_preview_shows_the_blocks_in_the_letters_language_and_the_diplomats(app, client):
    add_embassy(app)
    reply = post(client, PAGE, preview="Preview my appeal", language="es")
    body = reply.get_data(as_text=True)
    shown = blocks(body)
    assert list(shown) == ["minister", "chief-prosecutor", shown and list(shown)[2]]
    assert "Ministro de Justicia" in shown["minister"]
    assert "Salutation: Sr. Ministro" in shown["minister"]
    assert "Fiscal Jefe de la Audiencia Nacional" in shown["chief-prosecutor"]
    assert "Salutation: Sr. Fiscal Jefe" in shown["chief-prosecutor"]
    embassy = list(shown.values())[2]
    assert embassy == (
        "Copy: diplomatic representative Embassy of Spain in London 39 Chesham Place "
        "London SW1X 8SB United Kingdom Fax: +44 20 7259 5392 E-mail: emb.londres@maec.test "
        "Salutation: Excelencia"
    )
    assert 'id="no-diplomats"' not in body


def test_the_preview_says_plainly_when_no_diplomat_is_on_file(app, client):
    add_embassy(app, country="FR")  # someone else's country
    body = post(client, PAGE, preview="Preview my appeal", country="NZ").get_data(as_text=True)
    assert list(blocks(body)) == ["minister", "chief-prosecutor"]
    found = re.search(r'<p class="notice" id="no-diplomats">(.*?)</p>', body, re.S)
    assert found
    assert html.unescape(found.group(1)) == (
        "We have no diplomatic representative of Spain in New Zealand on file, "
        "so no diplomat receives a copy of your appeal."
    )


def test_the_missing_diplomats_sentence_is_in_the_interface_language(app, client):
    client.get(PAGE + "?lang=es")
    body = post(client, PAGE, preview="Preview my appeal", country="NZ").get_data(as_text=True)
    assert 'id="no-diplomats"' in body
    assert "España" in body.split('id="no-diplomats"')[1].split("</p>")[0]


# --- From the confirmation page, and for a confirmed appeal -------------------------------


def confirmation_link(client: Any, smtp: Any, work: Any) -> str:
    from helpers import confirmation_token

    assert (
        client.post(
            "/api/v1/campaigns/pavlov-extradition/appeals",
            json=supporter(language="en", message="Please act now."),
        ).status_code
        == 202
    )
    work()
    [mail] = smtp.received
    return f"/confirm/{confirmation_token(mail.message.get_body(('plain',)).get_content())}"


def test_the_confirmation_page_prints_the_letter_with_its_changes_and_confirms_nothing(
    app, client, smtp, work
):
    link = confirmation_link(client, smtp, work)
    page = client.get(link).get_data(as_text=True)
    assert f'formaction="{link}/letter.pdf"' in page
    assert list(blocks(page)) == ["minister", "chief-prosecutor"]
    assert 'id="no-diplomats"' in page

    token = csrf_token(page)
    edited = {"name": "Ana García", "language": "en", "country": "GB", "message": "Act today."}
    minister = pages(client.post(f"{link}/letter.pdf", data={"csrf_token": token, **edited}))[0]
    assert "Act today. Yours sincerely, Ana García United Kingdom" in flat(minister)
    # Printing neither confirms nor keeps the change.
    assert stored(app) == [(Status.AWAITING_CONFIRMATION, "Ana García", "Please act now.")]

    # Without its fields, it prints the letter as it was written.
    minister = pages(client.post(f"{link}/letter.pdf", data={"csrf_token": token}))[0]
    assert "Please act now. Yours sincerely" in flat(minister)

    bad = client.post(f"{link}/letter.pdf", data={"csrf_token": token, **edited, "name": "A\nB"})
    assert bad.status_code == 422
    assert f'<form method="post" action="{link}" novalidate>' in bad.get_data(as_text=True)
    assert client.post(f"{link}/letter.pdf", data=edited).status_code == 400  # no CSRF
    unknown = client.post("/confirm/not-a-token/letter.pdf", data={"csrf_token": token})
    assert unknown.status_code == 404
    assert stored(app) == [(Status.AWAITING_CONFIRMATION, "Ana García", "Please act now.")]


def test_a_confirmed_appeal_prints_through_its_public_id_until_it_is_erased(
    app, client, smtp, work
):
    link = confirmation_link(client, smtp, work)
    done = client.post(
        link, data={"csrf_token": csrf_token(client.get(link).get_data(as_text=True))}
    )
    assert done.status_code == 200
    with app.app_context():
        public_id = db.session.scalar(db.select(Appeal.public_id))
    url = f"/appeal/{public_id}/letter.pdf"
    assert f'href="{url}"' in done.get_data(as_text=True)

    minister, prosecutor = letters(pages(client.get(url)))
    assert "Please act now. Yours sincerely, Ana García United Kingdom" in flat(minister[0])
    assert "Dear Chief Prosecutor," in prosecutor[0].split("\n")

    assert client.get("/appeal/00000000-0000-4000-8000-000000000000/letter.pdf").status_code == 404
    assert client.get(f"/appeal/{'x' * 5000}/letter.pdf").status_code == 404
    with app.app_context():
        assert erase_supporter("ana@example.org", by="test") == 1
    gone = client.get(url)
    assert gone.status_code == 404
    assert "Ana" not in gone.get_data(as_text=True)


# --- In a real browser -------------------------------------------------------------------


@pytest.fixture
def live_server(app: Any) -> Iterator[str]:
    """The ``app`` fixture's Flask app on 127.0.0.1, on a free port, for this test only."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
def test_a_phone_previews_sees_every_addressee_and_downloads_the_pdf(app, live_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    add_embassy(app)
    elsewhere: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                base_url=live_server,
                viewport={"width": 390, "height": 844},
                is_mobile=True,
                has_touch=True,
                accept_downloads=True,
            )
            context.set_default_timeout(10_000)

            def guard(route: Any) -> None:  # this server and nothing else
                if route.request.url.startswith(live_server):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            context.route("**/*", guard)
            page = context.new_page()
            page.goto(PAGE)
            page.get_by_label("Your name").fill("Zoë Παπαδοπούλου")
            page.get_by_label("Your e-mail").fill("zoe@example.org")
            page.get_by_label("Language of the letter").select_option(value="en")
            page.get_by_label("Your country").select_option(value="GB")
            page.get_by_role("button", name="Preview my appeal").click()
            expect(page.locator("#letter-preview")).to_contain_text("Dear Minister")
            cards = page.locator("#addressees article")
            expect(cards).to_have_count(3)
            expect(cards.nth(1)).to_contain_text("Calle Prim 12")
            expect(cards.nth(2)).to_contain_text("Embassy of Spain in London")
            width = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
            assert width[0] <= width[1], f"the page is wider than the phone: {width}"
            page.locator("#addressees").screenshot(path=tmp_path / "addressees.png")

            with page.expect_download() as download:
                page.get_by_role("button", name="Printable letter (PDF)").click()
            assert download.value.suggested_filename == "letter-pavlov-extradition.pdf"
            path = tmp_path / "letter.pdf"
            download.value.save_as(path)
            # The page is still the preview: nothing was sent, nothing left the page.
            expect(page.locator("#letter-preview")).to_be_visible()
        finally:
            browser.close()
    texts = [page.extract_text() for page in PdfReader(path).pages]
    grouped = letters(texts, name="Zoë Παπαδοπούλου")
    assert len(grouped) == 3
    assert "Yours sincerely, Zoë Παπαδοπούλου United Kingdom" in flat(grouped[0][0])
    assert stored(app) == []
    assert elsewhere == []
