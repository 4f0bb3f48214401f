"""campaign.letters and the wording files: eight languages, each letter its own.

The rendering tests run in an app context of their own (no broker, no mail: a letter
is only text here); the fingerprint's tests go through the real pages and database.
"""

from __future__ import annotations

import html
import re
import shutil
import tomllib
from collections import Counter
from itertools import combinations
from math import prod
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from markupsafe import escape

from app import create_app
from campaign.campaigns import load_campaigns
from campaign.db import db
from campaign.exceptions import CampaignFileError
from campaign.letters import (
    COPY_RULE,
    choices_of,
    fingerprint,
    fingerprint_for,
    letter_for,
    render_letter,
)
from campaign.models import Appeal
from campaign.tokens import confirmation_token
from conftest import ROOT
from helpers import APPEALS_URL, csrf_token, supporter

SLUG = "pavlov-extradition"
ACTIONS = ROOT / "urgent-actions"
EMAIL = ROOT / "templates" / "email"
LANGUAGES = ("en", "es", "fr", "de", "it", "pt", "ca", "nl")
COUNTRIES = ("GB", "DE", "FR", "ES", "US", "MX", "AR", "IT", "NL", "SE")  # as synthetic.py

# What each letter must get right, language by language: the salutation (with its
# punctuation) for the Minister, the name of Kazakhstan and forms that would be wrong
# in that language, the words for the diplomatic assurances and for torture, and the
# Chief Prosecutor's title on the copy line.
EXPECTED = {
    "es": ("Sr. Ministro:", "Kazajistán", ("Kazakhstan", "Kazajstán"), "garantías diplomáticas",
           "tortura", "Fiscal Jefe de la Audiencia Nacional"),
    "en": ("Dear Minister,", "Kazakhstan", ("Kazajistán", "Kazakstan"), "diplomatic assurances",
           "torture", "Chief Prosecutor of the Audiencia Nacional"),
    "fr": ("Monsieur le Ministre,", "Kazakhstan", ("Kazajistán", "Kazakstan"),
           "assurances diplomatiques", "torture", "Procureur en chef de l'Audiencia Nacional"),
    "de": ("Sehr geehrter Herr Minister,", "Kasachstan", ("Kazakhstan", "Kasachistan"),
           "iplomatische", "Folter", "Leitender Oberstaatsanwalt der Audiencia Nacional"),
    "it": ("Egregio Signor Ministro,", "Kazakistan", ("Kazakhstan", "Kazajistán"),
           "garanzie diplomatiche", "tortura", "Procuratore capo dell'Audiencia Nacional"),
    "pt": ("Excelentíssimo Senhor Ministro,", "Cazaquistão", ("Kazakhstan", "Cazaquistao"),
           "garantias diplomáticas", "tortura", "Procurador-Chefe da Audiencia Nacional"),
    "ca": ("Senyor ministre,", "Kazakhstan", ("Kazajistán", "Kazakstan"),
           "garanties diplomàtiques", "tortura", "Fiscal en cap de l'Audiència Nacional"),
    "nl": ("Geachte heer Minister,", "Kazachstan", ("Kazakhstan", "Kazakstan"),
           "iplomatieke garanties", "foltering", "Hoofdofficier van justitie bij de Audiencia"),
}  # fmt: skip


@pytest.fixture(scope="module")
def letters_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An app context for rendering: a throwaway SQLite file with empty tables (every
    render here names its diplomats: none; ``letter_for`` reads the address changes:
    none), and no broker."""
    folder = tmp_path_factory.mktemp("letters")
    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "test-secret-key",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder}/unused.db",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": 1,
        }
    )
    with app.app_context():
        db.create_all()
        yield app


@pytest.fixture(scope="module")
def campaign(letters_app: Any) -> Any:
    return letters_app.extensions["campaigns"][SLUG]


def render(campaign: Any, language: str, seed: str, **overrides: Any) -> Any:
    person = {"name": "Ana García", "country": "GB", "message": None, "diplomats": []}
    person.update(overrides)
    return render_letter(
        campaign, email=seed, language=language, seed=seed, org_name="Org", **person
    )


def identical_per_thousand(bodies: Counter[str]) -> float:
    n = sum(bodies.values())
    return 1000 * sum(k * (k - 1) // 2 for k in bodies.values()) / (n * (n - 1) // 2)


def twins(campaign: Any, language: str, prefix: str) -> tuple[str, str]:
    """Two addresses whose letters in ``language`` have the same paragraphs: about one
    pair in 15,625, so a few hundred addresses hold some."""
    seen: dict[tuple[int, ...], str] = {}
    for i in range(5000):
        email = f"{prefix}-{i}@example.org"
        paragraphs = choices_of(email, campaign.wordings[language])[1]
        if paragraphs in seen:
            return seen[paragraphs], email
        seen[paragraphs] = email
    raise AssertionError("no two addresses with the same letter")


# --- Every language is complete, or the campaign does not load ----------------------------


def _offered() -> list[tuple[str, str]]:
    return [
        (path.name, language)
        for path in sorted(ACTIONS.glob("*.toml"))
        for language in tomllib.loads(path.read_text(encoding="utf-8"))["languages"]
    ]


@pytest.mark.parametrize(("filename", "language"), _offered())
def test_every_offered_language_has_its_letter_file_and_campaign_texts(filename, language):
    data = tomllib.loads((ACTIONS / filename).read_text(encoding="utf-8"))
    wording = EMAIL / data["slug"] / f"{language}.toml"
    assert wording.is_file(), f"{filename}: {wording.relative_to(ROOT)} is missing"
    letter = tomllib.loads(wording.read_text(encoding="utf-8"))
    assert len(letter["subjects"]) >= 4, f"{wording.name}: fewer than four subject lines"
    assert all(len(p) >= 4 for p in letter["paragraphs"]), f"{wording.name}: a paragraph with <4"
    assert len(letter["paragraphs"]) >= 5
    texts = ["title", "summary"] + (["late_notice"] if "deadline" in data else [])
    for key in texts:
        assert data[key].get(language, "").strip(), f"{filename}: {key}.{language} is missing"
    for addressee in data["addressees"]:
        for key in ("title", "salutation"):
            value = addressee.get(key, {}).get(language, "")
            assert value.strip(), f"{filename}: {addressee['key']} {key}.{language} is missing"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    actions, email = tmp_path / "urgent-actions", tmp_path / "email"
    shutil.copytree(ACTIONS, actions)
    shutil.copytree(EMAIL, email)
    return actions, email


def test_the_real_campaign_loads_with_eight_languages_of_one_shape(dirs):
    campaign = load_campaigns(*dirs)[SLUG]
    assert campaign.languages == LANGUAGES
    assert campaign.copy_language == "es"
    shapes = {w.shape for w in campaign.wordings.values()}
    assert shapes == {(5, 5, 5, 5, 5, 5)}


def test_a_missing_language_file_fails_the_load_naming_it(dirs):
    actions, email = dirs
    (email / SLUG / "fr.toml").unlink()
    with pytest.raises(CampaignFileError) as caught:
        load_campaigns(actions, email)
    assert "letter file email/pavlov-extradition/fr.toml is missing" in str(caught.value)
    assert "pavlov-extradition.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r'^fr = "Risque de torture[^\n]*\n', "'title' has no text for fr"),
        (r'^it = """Aleksandr Pavlov, 37 anni.*?"""\n', "'summary' has no text for it"),
        (r'^de = "Bitte sprechen[^\n]*\n', "'late_notice' has no text for de"),
        (r'^pt = "Ministro da Justiça"\n', "addressee 1 (minister): 'title' has no text for pt"),
        (
            r'^nl = "Geachte heer Hoofdofficier"\n',
            "addressee 2 (chief-prosecutor): 'salutation' has no text for nl",
        ),
    ],
)
def test_a_missing_campaign_text_fails_the_load_naming_it(dirs, pattern, message):
    actions, email = dirs
    path = actions / "pavlov-extradition.toml"
    text, removed = re.subn(pattern, "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    assert removed == 1
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CampaignFileError) as caught:
        load_campaigns(actions, email)
    assert message in str(caught.value)
    assert "pavlov-extradition.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("language", "change", "message"),
    [
        ("de", lambda t: re.sub(r"^closing = .*\n", "", t, flags=re.M), "'closing' is missing"),
        ("it", lambda t: t.replace("**garanzie", "garanzie", 1), "has an unpaired '**'"),
        (
            "nl",
            lambda t: re.sub(r'^    "Ik verzoek u daarom.*\n', "", t, flags=re.M),
            "nl.toml has [5, 5, 5, 4, 5, 5] phrasings per paragraph",
        ),
        ("es", lambda t: re.sub(r"^copy_heading = .*\n", "", t, flags=re.M), "'copy_heading'"),
        ("pt", lambda t: t.replace("subjects = [", "subjects = [\n  42,"), "subject 1 must be"),
        ("ca", lambda t: t + "\nsignature = 'x'\n", "unknown keys ['signature']"),
    ],
)
def test_a_broken_letter_file_fails_the_load_naming_it(dirs, language, change, message):
    actions, email = dirs
    path = email / SLUG / f"{language}.toml"
    before = path.read_text(encoding="utf-8")
    path.write_text(change(before), encoding="utf-8")
    assert path.read_text(encoding="utf-8") != before
    with pytest.raises(CampaignFileError) as caught:
        load_campaigns(actions, email)
    assert message in str(caught.value)
    assert f"email/pavlov-extradition/{language}.toml" in str(caught.value)


# --- Each language its own letter -----------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_letter_greets_the_minister_and_names_kazakhstan_and_spain_rightly(campaign, language):
    salutation, kazakhstan, wrong, assurances, torture, prosecutor = EXPECTED[language]
    for i in range(20):
        letter = render(campaign, language, f"greeting-{i}@example.org")
        own = letter.text.split(COPY_RULE)[0]
        assert own.startswith(salutation + "\n\n")
        assert kazakhstan in own and not any(w in own for w in wrong)
        assert assurances in own.lower() or assurances in own
        assert torture in own
        assert f"Sr. D. Javier Zaragoza Aguado, {prosecutor}" in own
        assert "Ana García\n" in own
        assert letter.subject in campaign.wordings[language].subjects
        assert "**" not in letter.text and "**" not in letter.html
        assert f'<html lang="{language}">' in letter.html
        assert "<strong>" in letter.html  # the diplomatic assurances, in bold


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_phrasing_keeps_both_requests(campaign, language):
    """Whatever the choice: paragraph 5 rejects diplomatic assurances, paragraph 6 asks
    how Spain keeps its obligation not to return anyone to torture."""
    _, kazakhstan, _, assurances, torture, _ = EXPECTED[language]
    first, _, _, refuse, assured, obligation = campaign.wordings[language].paragraphs
    assert all("Aleksandr Pavlov" in p.text and "Madrid" in p.text for p in first)
    assert all("Pavlov" in p.text for p in refuse)
    assert all(assurances in p.text.lower() or assurances in p.text for p in assured)
    spain = {"es": "España", "fr": "Espagne", "de": "Spanien", "it": "Spagna", "pt": "Espanha",
             "ca": "Espanya", "nl": "Spanje", "en": "Spain"}[language]  # fmt: skip
    assert all(spain in p.text and torture in p.text for p in obligation)


def test_the_spanish_letter_as_reviewed(campaign):
    wording = campaign.wordings["es"]
    texts = [p.text for paragraph in wording.paragraphs for p in paragraph]
    every = " ".join(texts + list(wording.subjects))
    assert "garantizar que España cumpla" in every
    assert not re.search(r"(garantizar|asegurar) que (España )?(cumple|respeta)\b", every)
    assert "Mujtar Abliázov" in every and "Ablyazov" not in every and "Mukhtar" not in every
    # Usted, one Minister: no plural imperatives or "les" in the subject lines.
    plural = re.compile(r"\b(extraditen|protejan|detengan|Les|ustedes)\b", re.I)
    assert not any(plural.search(s) for s in wording.subjects)
    assert "No extradite a Aleksandr Pavlov a Kazajistán" in wording.subjects
    # "Sr. D." goes with a full name only; "Sr." takes the article (el, al, del).
    assert not re.search(r"Sr\. D\. (Pavlov|Abliázov)", every)
    before = {m.group(1) for m in re.finditer(r"(\w+) Sr\. ", every)}
    assert before and before <= {"el", "El", "al", "del"}, before


def test_a_german_letter_begins_in_lower_case_after_the_comma(campaign):
    for phrasing in campaign.wordings["de"].paragraphs[0]:
        first = phrasing.text.split()[0]
        assert first.islower() or first == "Aleksandr", phrasing.text


@pytest.mark.parametrize("language", [lang for lang in LANGUAGES if lang != "es"])
def test_a_letter_in_another_language_carries_its_spanish_version(campaign, language):
    for i in range(10):
        seed = f"copy-{language}-{i}@example.org"
        letter = render(campaign, language, seed, message="Free him.\nNow.")
        spanish = render(campaign, "es", seed, message="Free him.\nNow.")
        own, copy = letter.text.split(COPY_RULE)
        assert copy == "Versión en español de esta carta:\n\n" + spanish.text
        assert copy.startswith("Versión en español de esta carta:\n\nSr. Ministro:\n\n")
        assert "Reino Unido" in copy and "Free him.\nNow.\n\nAtentamente," in copy
        assert own.endswith("\n") and COPY_RULE not in spanish.text
        # The HTML part carries it too, marked as Spanish, paragraph for paragraph.
        head, _, spanish_html = letter.html.partition('<div lang="es">')
        assert spanish_html, "no Spanish version in the HTML part"
        spanish_body = spanish.html.split("<body", 1)[1].split(">", 1)[1].split("</body>")[0]
        assert spanish_body.strip() in spanish_html
        assert "Free him.<br>\nNow." in head


def test_the_same_supporter_gets_the_same_letter_and_the_preview_is_it(campaign):
    writer = SimpleNamespace(
        name="Ana García", email="ana@example.org", language="fr", country="GB", message=None
    )
    first = letter_for(campaign, writer, "Org", [])
    assert letter_for(campaign, writer, "Org", []) == first
    assert render(campaign, "fr", "ana@example.org") == first


def test_every_paragraph_and_the_subject_vary_on_their_own(campaign):
    """2,000 supporters: every pair of paragraphs takes all 25 pairs of phrasings, and
    every subject occurs. One number picking every paragraph would give 5 pairs."""
    wording = campaign.wordings["en"]
    picks = [choices_of(f"supporter-{i}@example.org", wording) for i in range(2000)]
    assert {subject for subject, _ in picks} == set(range(len(wording.subjects)))
    for a, b in combinations(range(len(wording.paragraphs)), 2):
        assert len({(p[a], p[b]) for _, p in picks}) == 25, (a, b)


def test_fewer_than_one_identical_pair_in_a_thousand(campaign):
    """The goal, measured as bench/letters.py does: 2,000 synthetic appeals with the
    name removed, per language and overall; then, harder, 2,000 per language all
    from one country, where only the wording tells letters apart."""
    overall: Counter[str] = Counter()
    by_language: dict[str, Counter[str]] = {lang: Counter() for lang in LANGUAGES}
    for i in range(2000):
        language = LANGUAGES[i % len(LANGUAGES)]
        name = f"Synthetic Supporter test-{i}"
        text = render(
            campaign, language, f"supporter-test-{i}@example.org", name=name,
            country=COUNTRIES[i % len(COUNTRIES)],
        ).text  # fmt: skip
        overall[fingerprint(text, name)] += 1
        by_language[language][fingerprint(text, name)] += 1
    assert identical_per_thousand(overall) < 1
    for bodies in by_language.values():
        assert identical_per_thousand(bodies) < 1
    for language in LANGUAGES:
        bodies = Counter(
            fingerprint(render(campaign, language, f"one-{i}@example.org", name=f"S {i}").text,
                        f"S {i}")
            for i in range(2000)
        )  # fmt: skip
        assert len(bodies) > 1800
        assert identical_per_thousand(bodies) < 1, language
        assert 1000 / prod(campaign.wordings[language].shape) < 1  # the exact figure


def test_the_fingerprint_leaves_out_the_signature_and_nothing_else(campaign):
    first, second = twins(campaign, "en", "fp")
    ana = render(campaign, "en", first, name="Ana García").text
    bea = render(campaign, "en", second, name="Bea").text
    assert ana != bea
    assert fingerprint(ana, "Ana García") == fingerprint(bea, "Bea")
    # Whatever the name: one that is a word of the letter, or the prisoner's own.
    for name in ("a", "Aleksandr Pavlov", "Kazakhstan"):
        text = render(campaign, "en", second, name=name).text
        assert fingerprint(text, name) == fingerprint(bea, "Bea"), name
    other = render(campaign, "en", second, name="Bea", message="Free him.").text
    assert fingerprint(other, "Bea") != fingerprint(bea, "Bea")
    country = render(campaign, "en", second, name="Bea", country="FR").text
    assert fingerprint(country, "Bea") != fingerprint(bea, "Bea")
    assert re.fullmatch(r"[0-9a-f]{32}", fingerprint(bea, "Bea"))


def test_hostile_input_is_escaped_in_html_and_kept_in_text(campaign):
    name = 'O\'Brien <b>&</b> "Sons"'
    message = "<script>alert(1)</script>\r\nZeile 2 \u202e\u00a0" + "x" * 1000
    letter = render(campaign, "de", "hostile@example.org", name=name, message=message)
    assert "<script>" not in letter.html and "<b>&</b>" not in letter.html
    assert str(escape(name)) in letter.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;<br>" in letter.html
    assert message.replace("\r\n", "\n") in letter.text and name in letter.text


# --- The fingerprint, stored and counted -----------------------------------------------


def _preview(client: Any, email: str, message: str = "") -> str:
    page = client.get(f"/c/{SLUG}").get_data(as_text=True)
    data = {
        "csrf_token": csrf_token(page),
        "name": "Bea",
        "email": email,
        "language": "en",
        "country": "GB",
        "message": message,
        "preview": "Preview my appeal",
    }
    reply = client.post(f"/c/{SLUG}", data=data)
    assert reply.status_code == 200
    return reply.get_data(as_text=True)


def _same_letters(page: str) -> str:
    found = re.search(r'<p class="muted" id="same-letters">(.*?)</p>', page, re.S)
    assert found, "no count of the same letters under the preview"
    return " ".join(html.unescape(found.group(1)).split())


def test_the_fingerprint_is_stored_and_the_preview_counts_the_same_letters(app, client):
    campaign = app.extensions["campaigns"][SLUG]
    first, second = twins(campaign, "en", "twin")
    page = _preview(client, second)
    assert _same_letters(page) == "No one else has sent exactly this letter so far."

    reply = client.post(
        APPEALS_URL, json=supporter(email=first, language="en", country="GB", message=None)
    )
    assert reply.status_code == 202
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email=first))
        text = letter_for(campaign, appeal, "Org").text
        assert appeal.fingerprint == fingerprint(text, "Ana García")
        token = confirmation_token(appeal)

    # Another supporter about to send the very same text is told, and invited.
    assert _same_letters(_preview(client, second)) == (
        "1 other supporter has sent exactly this letter. Identical letters are easy to "
        "set aside: add a sentence of your own to make yours count."
    )
    assert _same_letters(_preview(client, first)).startswith("No one else")  # not oneself
    assert _same_letters(_preview(client, second, "Free him.")).startswith("No one else")

    # The owner changes the letter on the confirm page: the fingerprint follows.
    confirm = client.get(f"/confirm/{token}").get_data(as_text=True)
    assert _same_letters(confirm).startswith("No one else")
    reply = client.post(
        f"/confirm/{token}",
        data={
            "csrf_token": csrf_token(confirm),
            "name": "Ana García",
            "language": "en",
            "country": "GB",
            "message": "In my own words: free him.",
            "submit": "Send my appeal",
        },
    )
    assert reply.status_code == 200
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email=first))
        assert appeal.message == "In my own words: free him."
        assert appeal.fingerprint == fingerprint_for(campaign, appeal)
        assert appeal.fingerprint != fingerprint(text, "Ana García")
    assert _same_letters(_preview(client, second)).startswith("No one else")
