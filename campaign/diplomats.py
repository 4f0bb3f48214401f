"""Diplomatic representatives on file: checking an entry, importing a CSV file of them,
and the countries supporters write from where none is on file.

A representative is stored once per target state that a campaign copies
(``diplomats_of``): an entry typed once serves every campaign about that state.
Every entry, typed or imported, goes through :func:`check`: the same rules, the
same words.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass, field

from email_validator import EmailNotValidError
from flask_babel import gettext as _
from sqlalchemy import func, select

from .campaigns import all_campaigns
from .db import db
from .exceptions import InvalidInput
from .intake import countries, normalise_email
from .models import Appeal, Diplomat

NAME_MAX = 200
FAX_MAX = 64
POSTAL_MAX = 1000
EMAIL_MAX = 254
MAX_ROWS = 2000
"""Rows of one import (Spain has some 120 embassies and consulates)."""

COLUMNS = ("country", "name", "email", "fax", "postal_address")
_ALIASES = {"postal address": "postal_address", "address": "postal_address", "e-mail": "email"}
_FAX_CHARACTERS = frozenset("0123456789 +()-./")


def target_states() -> list[str]:
    """The states whose diplomats some campaign copies (``diplomats_of``)."""
    return sorted({c.diplomats_of for c in all_campaigns().values() if c.diplomats_of})


def _unprintable(text: str, newlines: bool = False) -> bool:
    for ch in text:
        if newlines and ch == "\n":
            continue
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return True
    return False


def check(
    country: str | None,
    name: str | None,
    email: str | None = None,
    fax: str | None = None,
    postal_address: str | None = None,
) -> dict[str, str | None]:
    """One representative's fields, cleaned; raises :class:`InvalidInput` naming each
    field that is wrong."""
    errors: dict[str, str] = {}
    known = dict(countries())
    code = (country or "").strip().upper()
    if not code:
        errors["country"] = _("Choose the country they are accredited to.")
    elif code not in known:
        errors["country"] = _("Not a country code we know (use two letters, such as GB).")
    name = unicodedata.normalize("NFC", (name or "").strip())
    if not name:
        errors["name"] = _("Enter the name of the representative or office.")
    elif len(name) > NAME_MAX:
        errors["name"] = _("Use at most %(n)s characters.", n=NAME_MAX)
    elif _unprintable(name):
        errors["name"] = _("Use one line of text, without control characters.")
    email = (email or "").strip() or None
    if email is not None:
        if len(email) > EMAIL_MAX:
            errors["email"] = _("Use at most %(n)s characters.", n=EMAIL_MAX)
        else:
            try:
                email = normalise_email(email, False)
            except EmailNotValidError as e:
                errors["email"] = str(e)
    fax = (fax or "").strip() or None
    if fax is not None:
        if len(fax) > FAX_MAX:
            errors["fax"] = _("Use at most %(n)s characters.", n=FAX_MAX)
        elif not set(fax) <= _FAX_CHARACTERS:
            errors["fax"] = _("Use digits, spaces and + ( ) - . / only.")
    postal = (postal_address or "").replace("\r\n", "\n").replace("\r", "\n").strip() or None
    if postal is not None:
        if len(postal) > POSTAL_MAX:
            errors["postal_address"] = _("Use at most %(n)s characters.", n=POSTAL_MAX)
        elif _unprintable(postal, newlines=True):
            errors["postal_address"] = _("Use text and line breaks only.")
    if errors:
        raise InvalidInput(errors)
    return {"country": code, "name": name, "email": email, "fax": fax, "postal_address": postal}


def exists(state: str, country: str, name: str, except_id: int | None = None) -> bool:
    query = select(Diplomat.id).where(
        Diplomat.target_state == state, Diplomat.country == country, Diplomat.name == name
    )
    if except_id is not None:
        query = query.where(Diplomat.id != except_id)
    return db.session.scalar(query.limit(1)) is not None


@dataclass
class ImportReport:
    accepted: list[tuple[int, str, str]] = field(default_factory=list)  # line, country, name
    refused: list[tuple[int, str]] = field(default_factory=list)  # line, why
    problem: str | None = None  # the file as a whole could not be read
    ignored_columns: list[str] = field(default_factory=list)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInput(
            {
                "file": _(
                    "The file is not UTF-8 text. In your spreadsheet, save it as "
                    "\u201cCSV UTF-8\u201d and try again."
                )
            }
        ) from e


def _reader(text: str) -> tuple[csv.DictReader[str], list[str]]:
    """A reader for the first delimiter (comma, semicolon, tab) whose header names the
    columns we need; and the header's columns we do not know."""
    first = text.split("\n", 1)[0]
    for delimiter in (",", ";", "\t"):
        header = next(csv.reader([first], delimiter=delimiter), [])
        names = [_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header]
        if "country" in names and "name" in names:
            reader = csv.DictReader(io.StringIO(text, newline=""), names, delimiter=delimiter)
            next(reader)  # the header itself
            return reader, [n for n in names if n not in COLUMNS]
    raise InvalidInput(
        {
            "file": _(
                "The first line must name the columns: country, name, and any of email, "
                "fax, postal_address."
            )
        }
    )


def import_csv(data: bytes) -> ImportReport:
    """Add the representatives of a CSV file, each row checked on its own: the rows that
    pass are added (for every target state), the others are listed with the reason.
    The caller audits and commits."""
    report = ImportReport()
    states = target_states()
    try:
        if not states:
            raise InvalidInput({"file": _("No campaign copies diplomats, so none can be added.")})
        reader, report.ignored_columns = _reader(_decode(data))
    except InvalidInput as e:
        report.problem = e.fields["file"]
        return report
    seen: dict[tuple[str, str], int] = {}
    on_file = {
        (country, name)
        for country, name in db.session.execute(
            select(Diplomat.country, Diplomat.name).where(Diplomat.target_state.in_(states))
        )
    }
    last = reader.line_num  # a row's number is the line it starts on
    try:
        for row in reader:
            line, last = last + 1, reader.line_num
            if len(report.accepted) + len(report.refused) >= MAX_ROWS:
                report.problem = _("Only the first %(n)s rows were read.", n=MAX_ROWS)
                break
            if None in row or all(not (v or "").strip() for v in row.values()):
                if None in row:  # more cells than the header has columns
                    report.refused.append((line, _("more cells than the first line names")))
                continue
            try:
                clean = check(*(row.get(c) for c in COLUMNS))
            except InvalidInput as e:
                report.refused.append((line, "; ".join(f"{k}: {v}" for k, v in e.fields.items())))
                continue
            key = (clean["country"] or "", clean["name"] or "")
            if key in seen:
                report.refused.append((line, _("repeats line %(n)s", n=seen[key])))
                continue
            seen[key] = line
            if key in on_file:
                report.refused.append((line, _("already on file: edit that entry instead")))
                continue
            for state in states:
                db.session.add(Diplomat(target_state=state, **clean))
            report.accepted.append((line, *key))
    except csv.Error as e:
        report.problem = _("Line %(n)s could not be read: %(why)s", n=reader.line_num, why=e)
    return report


def missing_countries() -> list[tuple[str, str, int]]:
    """(target state, supporter country, appeals) for each country that supporters of a
    campaign copying diplomats write from, with no representative of that state on
    file there; the most appeals first. Supporters in the target state itself need none."""
    out: list[tuple[str, str, int]] = []
    by_state: dict[str, list[str]] = {}
    for campaign in all_campaigns().values():
        if campaign.diplomats_of:
            by_state.setdefault(campaign.diplomats_of, []).append(campaign.slug)
    for state, slugs in sorted(by_state.items()):
        on_file = set(
            db.session.scalars(select(Diplomat.country).where(Diplomat.target_state == state))
        )
        rows = db.session.execute(
            select(Appeal.country, func.count())
            .where(Appeal.campaign.in_(slugs))
            .group_by(Appeal.country)
        ).all()
        out += [
            (state, country, int(n))
            for country, n in rows
            if country not in on_file and country != state
        ]
    out.sort(key=lambda r: (-r[2], r[1]))
    return out
