"""Personalised letters rendered from ``templates/email/<slug>/<language>/``."""

from __future__ import annotations

import gettext
import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import pycountry
from flask import current_app
from jinja2 import Environment, Template, select_autoescape

from .campaigns import Addressee, Campaign
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


def variant_of(seed: str) -> int:
    """A stable small number per supporter, so wording varies but re-renders are identical."""
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big")


def diplomats_for(campaign: Campaign, country: str) -> list[Diplomat]:
    return diplomats_of(campaign).get(country, [])


def diplomats_of(campaign: Campaign) -> dict[str, list[Diplomat]]:
    """The campaign's diplomats, by the country they are accredited to, in one query."""
    if not campaign.diplomats_of:
        return {}
    from .db import db

    by_country: dict[str, list[Diplomat]] = {}
    for diplomat in db.session.scalars(
        db.select(Diplomat)
        .where(Diplomat.target_state == campaign.diplomats_of)
        .order_by(Diplomat.country, Diplomat.name)
    ):
        by_country.setdefault(diplomat.country, []).append(diplomat)
    return by_country


def copies_for(campaign: Campaign, language: str, diplomats: list[Diplomat]) -> list[Copy]:
    copies = [Copy(a.name, a.title_in(language), a.email) for a in campaign.copies]
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


def _templates(slug: str, language: str) -> tuple[Template, Template, Template]:
    """The letter's three templates, looked up once per campaign and language."""
    cache = current_app.extensions.setdefault("letter_templates", {})
    found = cache.get((slug, language))
    if found is None:
        env = letters_env()
        base = f"email/{slug}/{language}/"
        found = cache[(slug, language)] = tuple(
            env.get_template(base + part) for part in ("subject.txt", "letter.txt", "letter.html")
        )
    return found  # type: ignore[no-any-return]


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
) -> Letter:
    """Render subject, text and HTML for one supporter. HTML is autoescaped."""
    to: Addressee = campaign.to
    copies = copies_for(campaign, language, diplomats)
    context = {
        "campaign": campaign,
        "addressee": to,
        "salutation": to.salutation_in(language),
        "copies": copies,
        "supporter": {
            "name": name,
            "email": email,
            "country": country,
            "country_name": country_name_in(country, language),
            "message": message,
        },
        "language": language,
        "variant": variant_of(seed),
        "org_name": org_name,
    }
    subject_template, text_template, html_template = _templates(campaign.slug, language)
    subject = " ".join(subject_template.render(context).split())[:SUBJECT_MAX]
    text = text_template.render(context).strip() + "\n"
    html = html_template.render(context)
    return Letter(
        subject=subject,
        text=text,
        html=html,
        to=(Recipient(to.name, to.email),),
        cc=tuple(Recipient(c.name, c.email) for c in copies if c.email),
    )


class Writer(Protocol):
    """Who writes: an appeal row, or a supporter's input being previewed."""

    name: str
    email: str
    language: str
    country: str
    message: str | None


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
    )
