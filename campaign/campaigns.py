"""Campaigns are data: one TOML file per Urgent Action, and its letter's wording in
``templates/email/<slug>/<language>.toml``, one file per language the campaign offers.

A wording file holds several faithful phrasings of every paragraph and a few subject
lines; :mod:`campaign.letters` picks one of each per supporter, so that letters differ.
Phrasing *n* of a paragraph says the same thing in every language of the campaign:
that is how a letter in French can carry its own Spanish version below it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from markupsafe import Markup, escape

from .exceptions import CampaignFileError, UnknownCampaign

TRANSLATED = ("title", "summary")
"""Campaign texts every offered language must have (``late_notice`` too, with a deadline)."""

WORDING_KEYS = {
    "salutation_end": "punctuation after the salutation: ',' in English, ':' in Spanish",
    "closing": "the closing line, e.g. 'Yours sincerely,'",
    "copies_label": "what introduces the copy line, e.g. 'Copies to:'",
    "subjects": "a list of subject lines (one is chosen per supporter)",
    "paragraphs": "a list of paragraphs, each a list of phrasings (one is chosen per supporter)",
}
"""Every key of a wording file, with what it is for (the loader's messages quote it)."""

LAYOUT_SPACE = re.compile(r"[ \t\r\n]+")


@dataclass(frozen=True)
class Phrasing:
    """One way of writing a paragraph: as plain text, and as HTML (``**...**`` in the
    file is ``<strong>`` here and nothing in the text)."""

    text: str
    html: Markup


@dataclass(frozen=True)
class Wording:
    """A campaign's letter in one language: the file ``email/<slug>/<language>.toml``."""

    language: str
    salutation_end: str
    closing: str
    copies_label: str
    subjects: tuple[str, ...]
    paragraphs: tuple[tuple[Phrasing, ...], ...]
    # Above this language's version of a letter written in another language.
    copy_heading: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        """How many phrasings each paragraph has."""
        return tuple(len(p) for p in self.paragraphs)


@dataclass(frozen=True)
class Addressee:
    """Someone the appeal is written to, with every channel the Urgent Action gives."""

    key: str
    role: str  # "to" or "cc"
    name: str
    title: dict[str, str]
    organisation: str = ""
    postal_address: str = ""
    fax: str = ""
    email: str = ""
    salutation: dict[str, str] = field(default_factory=dict)
    timezone: str = "UTC"

    def title_in(self, language: str) -> str:
        return self.title.get(language) or self.title.get("en") or next(iter(self.title.values()))

    def salutation_in(self, language: str) -> str:
        return self.salutation.get(language) or self.salutation.get("en", "")


@dataclass(frozen=True)
class Campaign:
    slug: str
    title: dict[str, str]
    summary: dict[str, str]
    deadline: date | None
    late_notice: dict[str, str]
    languages: tuple[str, ...]
    addressees: tuple[Addressee, ...]
    diplomats_of: str | None = None
    # A letter in any other language carries its version in this one below it, so
    # that the addressees can read every appeal (the Spanish ministry: "es").
    copy_language: str | None = None
    wordings: dict[str, Wording] = field(default_factory=dict, compare=False, repr=False)

    def text(self, attr: str, language: str) -> str:
        values: dict[str, str] = getattr(self, attr)
        return values.get(language) or values.get("en") or next(iter(values.values()), "")

    @property
    def to(self) -> Addressee:
        return next(a for a in self.addressees if a.role == "to")

    @property
    def copies(self) -> tuple[Addressee, ...]:
        return tuple(a for a in self.addressees if a.role == "cc")

    def past_deadline(self, today: date) -> bool:
        return self.deadline is not None and today > self.deadline


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise CampaignFileError(f"{where}: '{key}' is missing")
    value = data[key]
    if not isinstance(value, kind):
        raise CampaignFileError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def _addressee(data: dict[str, Any], where: str) -> Addressee:
    role = _require(data, "role", str, where)
    if role not in ("to", "cc"):
        raise CampaignFileError(f"{where}: role must be 'to' or 'cc', not {role!r}")
    known = {f for f in Addressee.__dataclass_fields__}
    unknown = set(data) - known
    if unknown:
        raise CampaignFileError(f"{where}: unknown keys {sorted(unknown)}")
    _require(data, "key", str, where)
    _require(data, "name", str, where)
    _require(data, "title", dict, where)
    return Addressee(**data)


def _phrasing(value: Any, where: str) -> Phrasing:
    if not isinstance(value, str) or not value.strip():
        raise CampaignFileError(f"{where} must be a non-empty string")
    # One paragraph: line breaks in the file are only layout. (Not str.split(), which
    # would take French no-break spaces, before ':' and ';', for breaks.)
    value = LAYOUT_SPACE.sub(" ", value).strip()
    if value.count("**") % 2:
        raise CampaignFileError(f"{where} has an unpaired '**'")
    parts = value.split("**")  # the odd ones are emphasised
    html = Markup("").join(
        Markup("<strong>%s</strong>") % part if i % 2 else escape(part)
        for i, part in enumerate(parts)
    )
    return Phrasing(text=value.replace("**", ""), html=html)


def parse_wording(data: dict[str, Any], language: str, where: str) -> Wording:
    """Build a language's :class:`Wording` from its parsed file, checking every key."""
    unknown = set(data) - set(WORDING_KEYS) - {"copy_heading"}
    if unknown:
        raise CampaignFileError(f"{where}: unknown keys {sorted(unknown)}")
    for key, meaning in WORDING_KEYS.items():
        if key not in data:
            raise CampaignFileError(f"{where}: '{key}' is missing ({meaning})")
    for key in ("salutation_end", "closing", "copies_label", "copy_heading"):
        if not isinstance(data.get(key, ""), str):
            raise CampaignFileError(f"{where}: '{key}' must be a string")
    subjects = data["subjects"]
    if not isinstance(subjects, list) or not subjects:
        raise CampaignFileError(f"{where}: 'subjects' must be a non-empty list")
    raw = data["paragraphs"]
    if not isinstance(raw, list) or not raw:
        raise CampaignFileError(f"{where}: 'paragraphs' must be a non-empty list of lists")
    paragraphs = []
    for i, phrasings in enumerate(raw, 1):
        if not isinstance(phrasings, list) or not phrasings:
            raise CampaignFileError(f"{where}: paragraph {i} must be a non-empty list")
        paragraphs.append(
            tuple(
                _phrasing(p, f"{where}: paragraph {i}, phrasing {j}")
                for j, p in enumerate(phrasings, 1)
            )
        )
    return Wording(
        language=language,
        salutation_end=data["salutation_end"],
        closing=data["closing"].strip(),
        copies_label=data["copies_label"].strip(),
        subjects=tuple(
            _phrasing(s, f"{where}: subject {i}").text for i, s in enumerate(subjects, 1)
        ),
        paragraphs=tuple(paragraphs),
        copy_heading=data.get("copy_heading", "").strip(),
    )


def load_wordings(
    slug: str, languages: tuple[str, ...], copy_language: str | None, templates: Path, where: str
) -> dict[str, Wording]:
    """Every language's wording file, each checked, and all of one shape: phrasing *n*
    of a paragraph is the same sentence in every language."""
    wordings: dict[str, Wording] = {}
    for language in languages:
        name = f"email/{slug}/{language}.toml"
        path = templates / slug / f"{language}.toml"
        if not path.is_file():
            raise CampaignFileError(f"{where}: letter file {name} is missing")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise CampaignFileError(f"{where}: {name}: {e}") from e
        wordings[language] = parse_wording(data, language, f"{where}: {name}")
    first = wordings[languages[0]]
    for language, wording in wordings.items():
        if wording.shape != first.shape:
            raise CampaignFileError(
                f"{where}: email/{slug}/{language}.toml has {list(wording.shape)} phrasings "
                f"per paragraph, email/{slug}/{languages[0]}.toml {list(first.shape)}: "
                "phrasing n must be the same sentence in every language"
            )
    if copy_language and not wordings[copy_language].copy_heading:
        raise CampaignFileError(
            f"{where}: email/{slug}/{copy_language}.toml: 'copy_heading' is missing "
            f"(the line above the {copy_language} version of a letter in another language)"
        )
    return wordings


def _translated(data: dict[str, Any], key: str, languages: tuple[str, ...], where: str) -> None:
    """``data[key]`` has a non-empty string for every language the campaign offers."""
    values = data.get(key, {})
    if not isinstance(values, dict):
        raise CampaignFileError(f"{where}: '{key}' must be a table of texts by language")
    missing = [lang for lang in languages if not str(values.get(lang, "")).strip()]
    if missing:
        raise CampaignFileError(f"{where}: '{key}' has no text for {', '.join(missing)}")


def parse_campaign(data: dict[str, Any], where: str, templates: Path) -> Campaign:
    """Build a :class:`Campaign` from a parsed TOML document, checking every field, and
    read its wording files: every language it offers has all its texts and its letter."""
    slug = _require(data, "slug", str, where)
    languages = tuple(_require(data, "languages", list, where))
    if not languages:
        raise CampaignFileError(f"{where}: 'languages' is empty")
    if not all(isinstance(lang, str) and lang for lang in languages):
        raise CampaignFileError(f"{where}: 'languages' must be language codes")
    raw_addressees = _require(data, "addressees", list, where)
    addressees = tuple(
        _addressee(dict(a), f"{where} addressee {i + 1}") for i, a in enumerate(raw_addressees)
    )
    if sum(a.role == "to" for a in addressees) != 1:
        raise CampaignFileError(f"{where}: exactly one addressee must have role 'to'")
    if not next(a for a in addressees if a.role == "to").email:
        raise CampaignFileError(f"{where}: the 'to' addressee needs an e-mail address")
    deadline = data.get("deadline")
    if deadline is not None and not isinstance(deadline, date):
        raise CampaignFileError(f"{where}: 'deadline' must be a date like 2013-09-05")
    for key in TRANSLATED:
        _require(data, key, dict, where)
        _translated(data, key, languages, where)
    if deadline is not None or "late_notice" in data:
        _translated(data, "late_notice", languages, where)
    for i, addressee in enumerate(addressees, 1):
        for key in ("title", "salutation"):
            _translated(vars(addressee), key, languages, f"{where} addressee {i} ({addressee.key})")
    copy_language = data.get("copy_language")
    if copy_language is not None and copy_language not in languages:
        raise CampaignFileError(
            f"{where}: 'copy_language' {copy_language!r} is not one of 'languages'"
        )
    return Campaign(
        slug=slug,
        title=data["title"],
        summary=data["summary"],
        deadline=deadline,
        late_notice=dict(data.get("late_notice", {})),
        languages=languages,
        addressees=addressees,
        diplomats_of=data.get("diplomats_of"),
        copy_language=copy_language,
        wordings=load_wordings(slug, languages, copy_language, templates, where),
    )


def load_campaigns(directory: Path, templates: Path) -> dict[str, Campaign]:
    """Read every ``*.toml`` campaign in ``directory``; a broken file fails loudly."""
    campaigns: dict[str, Campaign] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise CampaignFileError(f"{path}: {e}") from e
        campaign = parse_campaign(data, str(path), templates)
        if campaign.slug in campaigns:
            raise CampaignFileError(f"{path}: slug {campaign.slug!r} is used twice")
        campaigns[campaign.slug] = campaign
    return campaigns


def init_app(app: Flask) -> None:
    templates = Path(app.root_path) / (app.template_folder or "templates") / "email"
    app.extensions["campaigns"] = load_campaigns(Path(app.config["CAMPAIGNS_DIR"]), templates)


def all_campaigns() -> dict[str, Campaign]:
    return current_app.extensions["campaigns"]  # type: ignore[no-any-return]


def get_campaign(slug: str) -> Campaign:
    try:
        return all_campaigns()[slug]
    except KeyError:
        raise UnknownCampaign(slug) from None
