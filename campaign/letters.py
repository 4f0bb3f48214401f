"""Personalised letters, each its own: from a campaign's wording files
(``templates/email/<slug>/<language>.toml``, read by :mod:`campaign.campaigns`).

Every paragraph has several faithful phrasings and there are a few subject lines. A
supporter gets one of each, chosen from independent bits of a hash of their e-mail
address: the same supporter always gets the same letter (the preview is what goes),
and two supporters rarely get the same one (mailbox rules set identical letters
aside). A letter in a language other than the campaign's ``copy_language`` carries
its version in that language below it, with the same choices, so that the
addressees can read every appeal.

The text is joined here; the HTML goes through one thin layout,
``templates/email/_letter.html``. Both are built once per call from parsed data.
"""

from __future__ import annotations

import gettext
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Protocol

import pycountry
from flask import current_app
from jinja2 import Environment, select_autoescape
from markupsafe import Markup, escape

from .campaigns import Addressee, Campaign, Phrasing, Wording
from .models import Diplomat

SUBJECT_MAX = 200


@dataclass(frozen=True)
class Recipient:
    name: str
    email: str


@dataclass(frozen=True)
class Letter:
    """Everything the relay needs to know about one appeal, except the envelope sender."""

    subject: str
    text: str
    html: str
    to: tuple[Recipient, ...]
    cc: tuple[Recipient, ...]


@dataclass(frozen=True)
class Copy:
    """A copy line entry: who also receives the letter, and by which channel."""

    name: str
    title: str
    email: str = ""


@cache
def _country_translation(language: str) -> gettext.NullTranslations:
    return gettext.translation(
        "iso3166-1", pycountry.LOCALES_DIR, languages=[language], fallback=True
    )


@cache
def country_name_in(code: str, language: str) -> str:
    """The country's name in the letter's language, falling back to English."""
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    name = getattr(country, "common_name", None) or country.name
    return _country_translation(language).gettext(name)


def diplomats_for(campaign: Campaign, country: str) -> list[Any]:
    return list(diplomats_of(campaign).get(country, ()))


def diplomats_of(campaign: Campaign) -> Mapping[str, Sequence[Any]]:
    """The campaign's diplomats, by the country they are accredited to: a snapshot
    at most two seconds old (:mod:`campaign.snapshots`)."""
    if not campaign.diplomats_of:
        return {}
    from . import snapshots

    return snapshots.diplomats(campaign.diplomats_of)


def moved_addresses(campaign: Campaign) -> Mapping[str, str]:
    """The campaign file's addressees whose address changed at run time: old address,
    lower-case → the one in force (:mod:`campaign.addresses`; a snapshot, no query).
    A diplomat's address is its row's, changed there."""
    from . import snapshots

    return snapshots.addresses(campaign.slug)


def copies_for(
    campaign: Campaign,
    language: str,
    diplomats: list[Diplomat],
    moved: Mapping[str, str] = MappingProxyType({}),
) -> list[Copy]:
    """The copy addressees, the campaign file's first (through ``moved``, the changed
    addresses), then the diplomats."""
    copies = [
        Copy(a.name, a.title_in(language), moved.get(a.email.lower(), a.email))
        for a in campaign.copies
    ]
    copies += [Copy(d.name, "", d.email or "") for d in diplomats]
    return copies


def letters_env() -> Environment:
    """A Jinja environment for mail only: the app's templates, HTML autoescaped, but
    without Flask's request globals, which cost a third of each render."""
    env = current_app.extensions.get("letters_env")
    if env is None:
        env = Environment(
            loader=current_app.jinja_loader,
            autoescape=select_autoescape(["html"]),
            auto_reload=False,
            cache_size=1000,
        )
        current_app.extensions["letters_env"] = env
    return env


def choices_of(seed: str, wording: Wording) -> tuple[int, tuple[int, ...]]:
    """The subject line and the phrasing of each paragraph for this supporter: each
    from two bytes of its own of SHAKE-256(seed), so that no choice predicts another."""
    count = 1 + len(wording.paragraphs)
    digest = hashlib.shake_256(seed.encode()).digest(2 * count)
    picks = [int.from_bytes(digest[i : i + 2], "big") for i in range(0, 2 * count, 2)]
    return picks[0] % len(wording.subjects), tuple(
        pick % len(phrasings) for pick, phrasings in zip(picks[1:], wording.paragraphs, strict=True)
    )


@dataclass(frozen=True)
class Version:
    """The letter in one language, as the text and the HTML layout use it."""

    language: str
    salutation: str
    paragraphs: tuple[Phrasing, ...]
    message_lines: tuple[str, ...]
    closing: str
    name: str
    country_name: str
    copies_label: str
    copies: str
    heading: str = ""

    def text(self) -> str:
        parts = [self.salutation, *(p.text for p in self.paragraphs)]
        if self.message_lines:
            parts.append("\n".join(self.message_lines))
        parts += [self.closing, f"{self.name}\n{self.country_name}"]
        if self.copies:
            parts.append(f"{self.copies_label} {self.copies}")
        return "\n\n".join(parts) + "\n"

    def html(self) -> Markup:
        """The same, as HTML paragraphs. Built here rather than in Jinja: a letter has
        some forty pieces, and a template would take as long as the rest of the
        delivery worker's rendering to join them. Every piece is escaped."""
        e = escape
        parts = [f"<p>{e(self.salutation)}</p>", *(f"<p>{p.html}</p>" for p in self.paragraphs)]
        if self.message_lines:
            parts.append("<p>" + "<br>\n".join(map(e, self.message_lines)) + "</p>")
        parts += [f"<p>{e(self.closing)}</p>", f"<p>{e(self.name)}<br>{e(self.country_name)}</p>"]
        if self.copies:
            parts.append(f"{COPIES_STYLE}{e(self.copies_label)} {e(self.copies)}</p>")
        return Markup("\n".join(parts))  # noqa: S704 - each part escaped above


COPIES_STYLE = '<p style="font-size: 14px; color: #444;">'
COPY_RULE = "\n* * *\n\n"
"""Between a letter and its version in the campaign's ``copy_language``."""


def _version(
    campaign: Campaign,
    language: str,
    paragraph_choices: tuple[int, ...],
    *,
    name: str,
    country: str,
    message: str | None,
    diplomats: list[Diplomat],
    heading: str = "",
) -> Version:
    wording = campaign.wordings[language]
    return Version(
        language=language,
        salutation=campaign.to.salutation_in(language) + wording.salutation_end,
        paragraphs=tuple(p[c] for p, c in zip(wording.paragraphs, paragraph_choices, strict=True)),
        message_lines=tuple(message.splitlines()) if message else (),
        closing=wording.closing,
        name=name,
        country_name=country_name_in(country, language),
        copies_label=wording.copies_label,
        copies="; ".join(
            f"{c.name}, {c.title}" if c.title else c.name
            for c in copies_for(campaign, language, diplomats)
        ),
        heading=heading,
    )


def _versions(
    campaign: Campaign,
    *,
    name: str,
    language: str,
    country: str,
    message: str | None,
    seed: str,
    diplomats: list[Diplomat],
) -> tuple[str, Version, Version | None]:
    """The subject, the letter, and its version in the campaign's copy language if
    it is written in another."""
    wording = campaign.wordings[language]
    subject, paragraphs = choices_of(seed, wording)
    person = {"name": name, "country": country, "message": message, "diplomats": diplomats}
    letter = _version(campaign, language, paragraphs, **person)
    copy = None
    other = campaign.copy_language
    if other and other != language:
        heading = campaign.wordings[other].copy_heading
        copy = _version(campaign, other, paragraphs, heading=heading, **person)
    return wording.subjects[subject], letter, copy


SLOT = re.compile("\x00(title|letter|copy)\x00")
"""Where :func:`_frame` leaves a place to fill in the rendered layout."""


def _frame(campaign: Campaign, language: str) -> tuple[str, ...]:
    """The layout ``email/_letter.html`` for a letter in this language, rendered once
    with a mark where the subject and the letter's versions go, and split there:
    even items are layout, odd ones the names of what goes between. Filling it is a
    join, a tenth of what rendering the template for every letter would cost."""
    frames = current_app.extensions.setdefault("letter_frames", {})
    frame = frames.get((campaign.slug, language))
    if frame is None:
        other = campaign.copy_language if campaign.copy_language != language else None
        mark = {slot: Markup(f"\x00{slot}\x00") for slot in ("title", "letter", "copy")}  # noqa: S704
        rendered = (
            letters_env()
            .get_template("email/_letter.html")
            .render(
                title=mark["title"],
                language=language,
                letter=mark["letter"],
                copy=mark["copy"] if other else None,
                copy_language=other,
                copy_heading=campaign.wordings[other].copy_heading if other else "",
            )
        )
        frame = frames[(campaign.slug, language)] = tuple(SLOT.split(rendered))
    return frame  # type: ignore[no-any-return]


def letter_text(letter: Version, copy: Version | None) -> str:
    text = letter.text()
    if copy is not None:
        text += f"{COPY_RULE}{copy.heading}\n\n{copy.text()}"
    return text


def render_letter(
    campaign: Campaign,
    *,
    name: str,
    email: str,
    language: str,
    country: str,
    message: str | None,
    seed: str,
    diplomats: list[Diplomat],
    org_name: str,
    moved: Mapping[str, str] = MappingProxyType({}),
) -> Letter:
    """Render subject, text and HTML for one supporter. HTML is autoescaped.

    ``email`` and ``org_name`` are not in the letter (the envelope has them); they are
    here so that every caller passes the same description of an appeal. ``moved``
    maps the campaign file's addressees' changed addresses (:func:`moved_addresses`)."""
    subject, letter, copy = _versions(
        campaign,
        name=name,
        language=language,
        country=country,
        message=message,
        seed=seed,
        diplomats=diplomats,
    )
    subject = subject[:SUBJECT_MAX]  # one line already (campaigns.py); no-break spaces kept
    filling = {"title": escape(subject), "letter": letter.html(), "copy": copy and copy.html()}
    frame = _frame(campaign, language)
    html = "".join(part if i % 2 == 0 else filling[part] for i, part in enumerate(frame))
    to: Addressee = campaign.to
    to_address = moved.get(to.email.lower(), to.email)
    return Letter(
        subject=subject,
        text=letter_text(letter, copy),
        html=html,
        to=(Recipient(to.name, to_address),),
        cc=tuple(
            Recipient(c.name, c.email)
            for c in copies_for(campaign, language, diplomats, moved)
            if c.email
        ),
    )


def fingerprint(text: str, name: str) -> str:
    """The letter's text without the supporter's name, hashed: equal for two supporters
    whose letters differ only in the signature. The name is taken out where the letter
    puts it, the lines that are the name alone, not wherever its letters occur."""
    kept = "\n".join(line for line in text.split("\n") if line != name)
    return hashlib.sha256(kept.encode()).hexdigest()[:32]


class Writer(Protocol):
    """Who writes: an appeal row, or a supporter's input being previewed."""

    name: str
    email: str
    language: str
    country: str
    message: str | None


def fingerprint_for(
    campaign: Campaign, writer: Writer, diplomats: list[Diplomat] | None = None
) -> str:
    """The :func:`fingerprint` of this supporter's letter, without rendering its HTML."""
    if diplomats is None:
        diplomats = diplomats_for(campaign, writer.country)
    _, letter, copy = _versions(
        campaign,
        name=writer.name,
        language=writer.language,
        country=writer.country,
        message=writer.message,
        seed=writer.email,
        diplomats=diplomats,
    )
    return fingerprint(letter_text(letter, copy), writer.name)


def letter_for(
    campaign: Campaign, writer: Writer, org_name: str, diplomats: list[Diplomat] | None = None
) -> Letter:
    """The letter this supporter sends; the preview and the sent mail are the same."""
    if diplomats is None:
        diplomats = diplomats_for(campaign, writer.country)
    return render_letter(
        campaign,
        name=writer.name,
        email=writer.email,
        language=writer.language,
        country=writer.country,
        message=writer.message,
        seed=writer.email,
        diplomats=diplomats,
        org_name=org_name,
        moved=moved_addresses(campaign),
    )
