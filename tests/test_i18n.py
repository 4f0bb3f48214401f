"""The supporter interface in eight languages: pages, errors, the JSON API's messages and
the mail to supporters, each in the supporter's language whatever the letter's.

Real parts: the app's own catalogues (compiled from the .po files in this tree for the
session), the aiosmtpd server on loopback, Redis and both databases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from campaign.db import db
from campaign.i18n import INTERFACE_LANGUAGES
from campaign.models import Appeal
from conftest import ROOT
from helpers import APPEALS_URL, confirmation_token, csrf_token, supporter

PAGE = "/c/pavlov-extradition"
TRANSLATIONS = ROOT / "campaign" / "translations"
TRANSLATED = [code for code in INTERFACE_LANGUAGES if code != "en"]


@pytest.fixture(scope="module", autouse=True)
def compiled_catalogues() -> Iterator[None]:
    """What `make translations` does, so that these tests read the .po files as they are
    now and not a .mo left from an older run. The app loads catalogues per locale once
    per process, so the suite's other apps see the same files."""
    for code in TRANSLATED:
        folder = TRANSLATIONS / code / "LC_MESSAGES"
        with (folder / "messages.po").open("rb") as po:
            catalogue = read_po(po, locale=code)
        partial = folder / f"messages.mo.{os.getpid()}"
        with partial.open("wb") as mo:
            write_mo(mo, catalogue)
        partial.replace(folder / "messages.mo")  # whole, for any other process reading it
    yield


def _page(client: Any, path: str = PAGE, **headers: str) -> tuple[Any, str]:
    reply = client.get(path, headers=headers)
    return reply, reply.get_data(as_text=True)


def _html_lang(body: str) -> str:
    found = re.search(r'<html lang="([^"]+)"', body)
    assert found, "no <html lang> on the page"
    return found.group(1)


def _submit_value(body: str, name: str) -> str:
    """The label of the submit button ``name`` as the browser shows it."""
    for tag in re.findall(r"<input[^>]*>", body):
        if f'name="{name}"' in tag and 'type="submit"' in tag:
            found = re.search(r'value="([^"]*)"', tag)
            assert found
            return unescape(found.group(1))
    raise AssertionError(f"no submit button {name!r} on the page")


def _text(mail: Any) -> str:
    message: EmailMessage = mail.message
    return message.get_body(("plain",)).get_content()


def _html(mail: Any) -> str:
    message: EmailMessage = mail.message
    return message.get_body(("html",)).get_content()


# --- choosing the language ------------------------------------------------------------


def test_no_accept_language_is_english(client):
    reply, body = _page(client)
    assert reply.status_code == 200
    assert _html_lang(body) == "en"
    assert "Your name" in body and "Send my appeal" in body


def test_accept_language_french_gives_a_french_page(client):
    reply, body = _page(client, **{"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.5"})
    assert reply.status_code == 200
    assert _html_lang(body) == "fr"
    assert "Votre nom" in body and "Your name" not in body
    assert _submit_value(body, "send") == "Envoyer mon appel"
    # Country names and the letter languages are named in French too.
    assert ">Allemagne</option>" in body and ">Germany</option>" not in body
    assert ">Espagnol</option>" in body
    assert "Choisissez votre pays…" in body
    # The deadline as French writes it.
    assert "avant le 5 septembre 2013" in body


def test_a_language_we_do_not_speak_falls_back_to_english(client):
    _, body = _page(client, **{"Accept-Language": "ja, zh;q=0.8"})
    assert _html_lang(body) == "en"
    assert "Your name" in body


def test_lang_parameter_switches_and_a_cookie_remembers_it(client):
    reply, body = _page(client, f"{PAGE}?lang=de", **{"Accept-Language": "fr"})
    assert _html_lang(body) == "de" and "Ihr Name" in body
    cookie = reply.headers.get("Set-Cookie", "")
    assert cookie.startswith("lang=de;") and "HttpOnly" in cookie
    # The next page, with no parameter and a browser that prefers French: German still.
    _, body = _page(client, "/c/pavlov-extradition/link", **{"Accept-Language": "fr"})
    assert _html_lang(body) == "de"
    assert "Link erneut zusenden" in body
    # Switching again replaces it.
    _page(client, f"{PAGE}?lang=nl")
    _, body = _page(client)
    assert _html_lang(body) == "nl" and "Uw naam" in body


def test_an_unknown_lang_parameter_changes_nothing(client):
    reply, body = _page(
        client, f"{PAGE}?lang=xx%0D%0ASet-Cookie:%20a=b", **{"Accept-Language": "it"}
    )
    assert reply.status_code == 200
    assert _html_lang(body) == "it"
    assert "Set-Cookie" not in reply.headers or "a=b" not in reply.headers["Set-Cookie"]


def test_the_switcher_links_every_language_in_its_own_name(client):
    _, body = _page(client, **{"Accept-Language": "es"})
    for code, name in (("ca", "Català"), ("nl", "Nederlands"), ("de", "Deutsch")):
        assert f'href="{PAGE}?lang={code}" hreflang="{code}" lang="{code}"' in body
        assert f">{name}</a>" in body


@pytest.mark.parametrize("code", TRANSLATED)
def test_every_public_page_speaks_the_language(client, code):
    """The pages a supporter sees, in each language: no English sentence left over."""
    english = ["Your name", "Choose your country", "Send me the link again", "Ask for the link"]
    _, body = _page(client, f"{PAGE}?lang={code}")
    assert _html_lang(body) == code
    for phrase in english[:2]:
        assert phrase not in body, (code, phrase)
    _, body = _page(client, "/c/pavlov-extradition/link")
    assert "Send me the link again" not in body
    _, body = _page(client, "/confirm/not-a-real-token-but-long-enough")
    assert "This link does not work any more" not in body
    _, body = _page(client, "/c/no-such-campaign")
    assert "Not found" not in body and "There is no such campaign." not in body


def _selected(body: str, name: str) -> str:
    select = re.search(rf'(?s)<select[^>]*name="{name}".*?</select>', body)
    assert select, f"no select {name!r}"
    found = re.findall(r'<option selected value="([^"]*)"', select.group(0))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("accept", "letter"), [("es", "es"), ("en-GB", "en"), ("", "en")])
def test_the_letter_language_starts_as_the_interface_language(client, accept, letter):
    _, body = _page(client, **({"Accept-Language": accept} if accept else {}))
    assert _selected(body, "language") == letter


def test_a_chosen_letter_language_is_kept_whatever_the_interface(client):
    _, body = _page(client, f"{PAGE}?lang=fr")
    assert _selected(body, "language") == "fr"
    reply = client.post(
        PAGE,
        data={
            "csrf_token": csrf_token(body),
            "name": "Ana García",
            "email": "ana@example.org",
            "language": "es",
            "country": "GB",
            "preview": "1",
        },
    )
    assert reply.status_code == 200
    preview = reply.get_data(as_text=True)
    assert _html_lang(preview) == "fr"
    assert _selected(preview, "language") == "es"
    assert "Sr. Ministro" in preview  # the letter is the Spanish one


# --- form errors ----------------------------------------------------------------------


def test_form_errors_are_in_the_interface_language(client):
    _, body = _page(client, f"{PAGE}?lang=es")
    reply = client.post(
        PAGE,
        data={
            "csrf_token": csrf_token(body),
            "name": "Ana\r\nBcc: victim@example.com",
            "email": "not an address",
            "language": "es",
            "country": "ZZ",
            "message": "x" * 1001,
            "send": "1",
        },
    )
    assert reply.status_code == 422
    page = unescape(reply.get_data(as_text=True))
    assert "El nombre debe ocupar una sola línea, sin caracteres de control." in page
    assert "Escriba una dirección de correo electrónico válida" in page
    assert "País desconocido" in page
    assert "Debe tener como máximo 1000 caracteres." in page
    assert "Indíquenos que está de acuerdo" in page
    # Nothing lost: what was typed is still in the form.
    assert 'value="not an address"' in page


def test_a_request_too_large_is_refused_in_the_interface_language(client):
    _, body = _page(client, f"{PAGE}?lang=es")
    reply = client.post(
        PAGE, data={"csrf_token": csrf_token(body), "message": "x" * 100_000, "send": "1"}
    )
    assert reply.status_code == 413
    page = reply.get_data(as_text=True)
    assert _html_lang(page) == "es"
    assert "<h1>Demasiado texto</h1>" in page
    assert "Era más texto del que podemos aceptar." in page


def test_a_stale_form_says_so_in_the_interface_language(client):
    _page(client, f"{PAGE}?lang=pt")
    reply = client.post(PAGE, data={"name": "Ana", "send": "1"})  # no CSRF token
    assert reply.status_code == 400
    body = reply.get_data(as_text=True)
    assert _html_lang(body) == "pt"
    assert "Este formulário expirou" in body


# --- the JSON API ---------------------------------------------------------------------


def test_api_messages_follow_accept_language_and_codes_stay(client):
    bad = client.post(APPEALS_URL, json=supporter(country="ZZ"), headers={"Accept-Language": "de"})
    assert bad.status_code == 422
    body = bad.get_json()
    assert body["error"] == "invalid_input"
    assert set(body["fields"]) == {"country"}
    assert body["message"] == "Einige Felder müssen noch korrigiert werden."
    assert body["fields"]["country"].startswith("Unbekanntes Land")

    english = client.post(APPEALS_URL, json=supporter(country="ZZ")).get_json()
    assert english["error"] == "invalid_input"
    assert english["message"] == "Some fields need attention."

    missing = client.post(
        "/api/v1/campaigns/nope/appeals", json={}, headers={"Accept-Language": "it"}
    )
    assert missing.status_code == 404
    assert missing.get_json()["error"] == "unknown_campaign"
    assert missing.get_json()["message"] == "Questa campagna non esiste."


def test_api_stores_the_locale_from_accept_language_or_the_body(app, client):
    client.post(
        APPEALS_URL, json=supporter(email="a@example.org"), headers={"Accept-Language": "ca"}
    )
    client.post(
        APPEALS_URL,
        json=supporter(email="b@example.org", locale="pt-BR"),
        headers={"Accept-Language": "ca"},
    )
    client.post(APPEALS_URL, json=supporter(email="c@example.org"))
    with app.app_context():
        stored = dict(db.session.execute(db.select(Appeal.email, Appeal.locale)).all())
    assert stored == {"a@example.org": "ca", "b@example.org": "pt", "c@example.org": "en"}


@pytest.mark.parametrize("locale", ["xx", "", 7, ["fr"], "fr\r\nX: y", "f" * 10_000])
def test_api_refuses_a_locale_it_does_not_speak(app, client, locale):
    reply = client.post(APPEALS_URL, json=supporter(locale=locale))
    assert reply.status_code == 422
    body = reply.get_json()
    assert set(body["fields"]) == {"locale"}
    assert "en, es, fr, de, it, pt, ca, nl" in body["fields"]["locale"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Appeal)) == 0


# --- mail to the supporter ------------------------------------------------------------


def test_a_german_supporter_of_a_spanish_letter_reads_german_mail(app, client, smtp, work):
    """The issue's case: the mail, its subject and the button it names are German, as
    the confirm page is; the letter stays Spanish."""
    _, form_page = _page(client, f"{PAGE}?lang=de", **{"Accept-Language": "es"})
    reply = client.post(
        PAGE,
        data={
            "csrf_token": csrf_token(form_page),
            "name": "Jürgen Groß",
            "email": "juergen@example.org",
            "language": "es",
            "country": "DE",
            "message": "",
            "consent": "y",
            "send": "1",
        },
        headers={"Accept-Language": "es"},
    )
    assert reply.status_code == 200
    submitted = reply.get_data(as_text=True)
    assert _html_lang(submitted) == "de" and "<h1>Danke</h1>" in submitted

    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email="juergen@example.org"))
        assert (appeal.language, appeal.locale) == ("es", "de")
    work()
    [mail] = [m for m in smtp.received if m.rcpt_tos == ["juergen@example.org"]]
    text, html = _text(mail), _html(mail)
    assert mail.message["Subject"].startswith("Bitte bestätigen Sie Ihren Appell: ")
    assert "Guten Tag Jürgen Groß," in text
    assert 'lang="de"' in html

    # The confirm page, opened from the mail in the same browser.
    token = confirmation_token(text)
    confirm_page = client.get(f"/confirm/{token}").get_data(as_text=True)
    assert _html_lang(confirm_page) == "de"
    button = _submit_value(confirm_page, "submit")
    assert button == "Meinen Appell senden"
    assert f"klicken Sie auf „{button}“" in text
    assert f"klicken Sie auf „{button}“" in unescape(html)
    assert "Send my appeal" not in text and "Enviar mi llamamiento" not in text
    # The letter itself is the Spanish one the supporter chose.
    assert "Sr. Ministro" in unescape(confirm_page)


def test_each_supporter_gets_their_own_language_in_one_batch(app, client, smtp, work):
    for email, lang in (
        ("fr@example.org", "fr"),
        ("nl@example.org", "nl"),
        ("en@example.org", None),
    ):
        headers = {"Accept-Language": lang} if lang else {}
        assert (
            client.post(APPEALS_URL, json=supporter(email=email), headers=headers).status_code
            == 202
        )
    work()
    subjects = {m.rcpt_tos[0]: m.message["Subject"] for m in smtp.received}
    assert subjects["fr@example.org"].startswith("Veuillez confirmer votre appel : ")
    assert subjects["nl@example.org"].startswith("Bevestig uw oproep: ")
    assert subjects["en@example.org"].startswith("Please confirm your appeal: ")
    texts = {m.rcpt_tos[0]: _text(m) for m in smtp.received}
    assert "cliquez sur « Envoyer mon appel »" in texts["fr@example.org"]
    assert "klik op ‘Mijn oproep versturen’" in texts["nl@example.org"]
    assert "press “Send my appeal”" in texts["en@example.org"]


def test_the_notice_speaks_the_supporters_language(app, client, smtp, work):
    app.config["CONFIRMATION_MAILS_PER_DAY"] = 5
    headers = {"Accept-Language": "it"}
    client.post(APPEALS_URL, json=supporter(), headers=headers)
    work()
    token = confirmation_token(_text(smtp.received[-1]))
    assert client.post(f"/api/v1/confirm/{token}").status_code == 200
    work()
    work()  # and whatever follows the appeal's delivery (a receipt)
    before = len(smtp.received)
    client.post(APPEALS_URL, json=supporter(name="Someone Else"), headers={"Accept-Language": "en"})
    work()
    [notice] = smtp.received[before:]
    assert notice.rcpt_tos == ["ana@example.org"]
    assert notice.message["Subject"].startswith("Il suo appello: ")
    assert "Da questo indirizzo è già stato inviato un appello" in _text(notice)


def test_confirming_in_another_language_changes_the_stored_one(app, client, smtp, work):
    client.post(APPEALS_URL, json=supporter(), headers={"Accept-Language": "fr"})
    work()
    token = confirmation_token(_text(smtp.received[-1]))
    page = client.get(f"/confirm/{token}?lang=ca").get_data(as_text=True)
    assert _html_lang(page) == "ca"
    reply = client.post(
        f"/confirm/{token}",
        data={
            "csrf_token": csrf_token(page),
            "name": "Ana García",
            "language": "es",
            "country": "GB",
            "message": "",
            "submit": "1",
        },
    )
    assert reply.status_code == 200
    assert _html_lang(reply.get_data(as_text=True)) == "ca"
    with app.app_context():
        assert db.session.scalar(db.select(Appeal.locale)) == "ca"


# --- the catalogues -------------------------------------------------------------------


def _extract(tmp_path: Path) -> Any:
    """The strings in the code now, extracted as `make messages` does."""
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            str(ROOT / "babel.cfg"),
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "--no-wrap",
            "-o",
            str(pot),
            str(ROOT),
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    with pot.open("rb") as f:
        return read_po(f)


def _catalogue(code: str) -> Any:
    with (TRANSLATIONS / code / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=code)


def _forms(message: Any) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple) else [message.string]


def test_extraction_finds_the_interface(tmp_path):
    """The check below is only as good as the extraction: it must see templates, mail
    templates and Python alike."""
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in _extract(tmp_path) if m.id}
    for expected in (
        "Send my appeal",  # campaign/forms.py, lazy
        "This field is required.",  # campaign/intake.py
        "Please confirm your appeal: %(title)s",  # templates/email/confirmation/subject.txt
        "Urgent Action",  # templates/base.html
    ):
        assert expected in ids


def test_every_catalogue_translates_every_string(tmp_path):
    template = _extract(tmp_path)
    gaps = []
    for code in TRANSLATED:
        path = f"campaign/translations/{code}/LC_MESSAGES/messages.po"
        catalogue = _catalogue(code)
        for wanted in template:
            if not wanted.id:
                continue
            found = catalogue.get(wanted.id)
            msgid = wanted.id if isinstance(wanted.id, str) else wanted.id[0]
            if found is None:
                gaps.append(f"{path}: missing msgid {msgid!r}")
            elif found.fuzzy:
                gaps.append(f"{path}: fuzzy msgid {msgid!r}")
            elif not all(s.strip() for s in _forms(found)) or len(_forms(found)) < (
                catalogue.num_plurals if found.pluralizable else 1
            ):
                gaps.append(f"{path}: untranslated msgid {msgid!r}")
    assert not gaps, "run `make messages` and translate:\n" + "\n".join(gaps)


_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
_TAG = re.compile(r"</?\w+[^>]*>")


@pytest.mark.parametrize("code", TRANSLATED)
def test_placeholders_and_markup_survive_in_every_translation(code):
    problems = []
    for message in _catalogue(code):
        if not message.id or not any(_forms(message)):
            continue
        source = message.id[-1] if isinstance(message.id, tuple) else message.id
        names = set(_PLACEHOLDER.findall(source))
        tags = sorted(_TAG.findall(source))
        for form in _forms(message):
            if set(_PLACEHOLDER.findall(form)) != names:
                problems.append(f"{code}: placeholders differ in {form!r} for {source!r}")
            if sorted(_TAG.findall(form)) != tags:
                problems.append(f"{code}: markup differs in {form!r} for {source!r}")
            try:
                form % dict.fromkeys(names, 1)  # noqa: B018 - must format as the msgid does
            except (KeyError, ValueError, TypeError) as e:
                problems.append(f"{code}: {form!r} does not format: {e}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("language", INTERFACE_LANGUAGES)
def test_supporter_mail_reads_the_same_as_through_flask_babels_own_gettext(
    app, monkeypatch, language
):
    """Composing a supporter mail binds gettext and ngettext to the catalogue once
    (``mail.catalogue_calls``); the supporter reads exactly what Flask-Babel's own calls
    give: the confirmation, the notice and the receipt (its plurals, its copies, its
    escaping), in every language, the link working for one day and for several."""
    from flask_babel import force_locale

    from campaign import mail, mime
    from campaign.delivery.receipts import receipt_message
    from campaign.delivery.recipients import Copy
    from campaign.settings import relay_settings
    from campaign.synthetic import create_synthetic

    with app.app_context():
        create_synthetic("pavlov-extradition", 1)
        appeal = db.session.scalar(db.select(Appeal))
        db.session.expunge(appeal)
        appeal.name = "Ana <b>García</b> & co"
        copies = [
            Copy("ministro@mju.es", "Ministro", "to", "accepted", accepted_at=appeal.created_at),
            Copy("embassy@example.org", "Embassy", "cc", "failed", last_reply="550 no such user"),
        ]
        relay = relay_settings()

        def parts(bound: bool, language: str = language) -> list[tuple[str, str, str]]:
            built: list[dict[str, Any]] = []
            with monkeypatch.context() as patch:
                patch.setattr(mime, "build", lambda **kw: built.append(kw) or b"Subject: x\r\n\r\n")
                if not bound:  # the templates fall back on the environment's globals
                    patch.setattr(mail, "catalogue_calls", dict)
                with force_locale(language):
                    for days in ("1", "30"):
                        app.config["CONFIRM_TOKEN_DAYS"] = app.config["RETENTION_DAYS"] = days
                        mail.confirmation_message(appeal, "token", relay)
                        mail.notice_message(appeal, relay)
                        receipt_message(appeal, copies, relay, [])
            return [(kw["subject"], kw["text"], kw["html"]) for kw in built]

        bound, babel = parts(bound=True), parts(bound=False)
        english = parts(bound=True, language="en")
    assert len(bound) == 6 and bound == babel
    # The catalogue spoke (English is the source language), and HTML was escaped.
    assert (bound == english) == (language == "en")
    assert "&lt;b&gt;" in bound[0][2] and "<b>García" not in bound[0][2]
