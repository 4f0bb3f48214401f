"""Finding appeals: the managers' filters, a page of results at a time, and the same
filters for bulk actions and the export.

A page of results is a range of the primary key (keyset: ``?before=<id>``), its copies
read in one further query, and its count stops at :data:`COUNT_CAP`; the export reads
a chunk of rows at a time and never holds them all.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import selectinload

from .campaigns import all_campaigns
from .db import db
from .letters import diplomats_of
from .models import Appeal, Recipient, Status

PAGE_SIZE = 50
"""Appeals per page of search results."""

COUNT_CAP = 1000
"""A search counts its matches up to this many, and then says "more than": a count
that stops there costs a thousand rows, not the whole table."""


# --- Finding appeals ---------------------------------------------------------------------

DATE_FIELDS = {"created": "created_at", "confirmed": "confirmed_at", "sent": "sent_at"}
"""Which of an appeal's dates the date range applies to."""

FILTER_FIELDS = (
    "email",
    "appeal",
    "status",
    "campaign",
    "language",
    "country",
    "domain",
    "dates",
    "since",
    "until",
)

_MAX_LENGTH = {"email": 254, "appeal": 64, "domain": 253}
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
_CODE = re.compile(r"^[A-Za-z]{2}$")


class FilterError(ValueError):
    """Some filters could not be understood: ``errors`` maps each field to why."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Filters:
    """What a manager looks for. Empty fields match everything."""

    email: str = ""
    appeal_id: int | None = None
    public_id: str = ""
    status: str = ""
    campaign: str = ""
    language: str = ""
    country: str = ""
    domain: str = ""
    dates: str = "created"
    since: date | None = None
    until: date | None = None

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> Filters:
        """Filters from a query string; raises :class:`FilterError` naming each field
        that makes no sense (the page shows it beside what was typed)."""
        raw = {k: str(args.get(k) or "").strip() for k in FILTER_FIELDS}
        errors: dict[str, str] = {}
        for name, limit in _MAX_LENGTH.items():
            if len(raw[name]) > limit:
                errors[name] = f"At most {limit} characters."
        values: dict[str, Any] = {"email": raw["email"]}
        if "email" in errors or any(ord(c) < 32 for c in raw["email"]):
            errors.setdefault("email", "An address, or part of one, on one line.")
        appeal = raw["appeal"]
        if appeal and "appeal" not in errors:
            if appeal.lstrip("#").isdigit() and len(appeal) < 12:
                values["appeal_id"] = int(appeal.lstrip("#"))
            else:
                try:
                    values["public_id"] = str(uuid.UUID(appeal))
                except ValueError:
                    errors["appeal"] = (
                        "An appeal's number (as in the lists), or the id in its status link."
                    )
        if raw["status"] and raw["status"] not in Status.ALL:
            errors["status"] = "Choose a status from the list."
        values["status"] = raw["status"]
        if raw["campaign"] and raw["campaign"] not in all_campaigns():
            errors["campaign"] = "Choose a campaign from the list."
        values["campaign"] = raw["campaign"]
        for name, example in (("language", "es"), ("country", "GB")):
            if raw[name] and not _CODE.match(raw[name]):
                errors[name] = f"Two letters, like {example}."
        values["language"] = raw["language"].lower()
        values["country"] = raw["country"].upper()
        domain = raw["domain"].lower().lstrip("@")
        if domain and "domain" not in errors:
            with contextlib.suppress(UnicodeError):  # a domain typed in its own script
                domain = domain.encode("idna").decode("ascii")
            if not _DOMAIN.match(domain) or ".." in domain:
                errors["domain"] = "A domain name, like mju.es."
        values["domain"] = domain
        if raw["dates"] and raw["dates"] not in DATE_FIELDS:
            errors["dates"] = "Choose a date from the list."
        values["dates"] = raw["dates"] or "created"
        for name in ("since", "until"):
            if raw[name]:
                try:
                    values[name] = date.fromisoformat(raw[name])
                except ValueError:
                    errors[name] = "A date like 2026-09-05."
        if errors:
            raise FilterError(errors)
        return cls(**values)

    def args(self) -> dict[str, str]:
        """The filters as query-string values (what a link or hidden field carries)."""
        args = {
            "email": self.email,
            "appeal": str(self.appeal_id) if self.appeal_id is not None else self.public_id,
            "status": self.status,
            "campaign": self.campaign,
            "language": self.language,
            "country": self.country,
            "domain": self.domain,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        if self.since or self.until:
            args["dates"] = self.dates
        return {k: v for k, v in args.items() if v}

    def describe(self) -> str:
        """The filters in words, for the confirm page and the audit log."""
        parts = []
        if self.email:
            parts.append(f"e-mail containing {self.email!r}")
        if self.appeal_id is not None:
            parts.append(f"appeal #{self.appeal_id}")
        if self.public_id:
            parts.append(f"appeal {self.public_id}")
        for label, value in (
            ("status", self.status.replace("_", " ")),
            ("campaign", self.campaign),
            ("letter language", self.language),
            ("supporter country", self.country),
            ("mail to", self.domain),
        ):
            if value:
                parts.append(f"{label} {value}")
        if self.since:
            parts.append(f"{self.dates} on or after {self.since}")
        if self.until:
            parts.append(f"{self.dates} on or before {self.until}")
        return ", ".join(parts) or "all appeals"

    def conditions(self) -> list[ColumnElement[bool]]:
        """The filters as SQL conditions on ``appeals``."""
        c: list[ColumnElement[bool]] = []
        if self.email:  # lower() and LIKE: a third faster than ILIKE on PostgreSQL
            c.append(func.lower(Appeal.email).contains(self.email.lower(), autoescape=True))
        if self.appeal_id is not None:
            c.append(Appeal.id == self.appeal_id)
        if self.public_id:
            c.append(Appeal.public_id == self.public_id)
        if self.status:
            c.append(Appeal.status == self.status)
        if self.campaign:
            c.append(Appeal.campaign == self.campaign)
        if self.language:
            c.append(Appeal.language == self.language)
        if self.country:
            c.append(Appeal.country == self.country)
        if self.domain:
            c.append(_to_domain(self.domain))
        column = getattr(Appeal, DATE_FIELDS[self.dates])
        if self.since:
            c.append(column >= datetime.combine(self.since, time(0), tzinfo=UTC))
        if self.until:
            c.append(column < datetime.combine(self.until + timedelta(days=1), time(0), tzinfo=UTC))
        return c


def _to_domain(domain: str) -> ColumnElement[bool]:
    """Appeals whose letter goes, or went, to an address at ``domain``: a campaign's
    addressee there (every appeal of it), a diplomat there (the appeals from the
    country they are accredited to), or a copy recorded there (after the first try)."""
    at = f"@{domain}"
    matches: list[ColumnElement[bool]] = []
    for slug, campaign in all_campaigns().items():
        if any(a.email.lower().endswith(at) for a in campaign.addressees if a.email):
            matches.append(Appeal.campaign == slug)
            continue
        if campaign.diplomats_of:
            countries = sorted(
                {
                    country
                    for country, found in diplomats_of(campaign).items()
                    for d in found
                    if d.email and d.email.lower().endswith(at)
                }
            )
            if countries:
                matches.append(and_(Appeal.campaign == slug, Appeal.country.in_(countries)))
    # IN, not EXISTS: one pass over the copies, hashed, instead of a probe per appeal.
    recorded = Appeal.id.in_(
        select(Recipient.appeal_id).where(
            func.lower(Recipient.address).endswith(at, autoescape=True)
        )
    )
    return or_(*matches, recorded) if matches else or_(false(), recorded)


@dataclass
class Page:
    appeals: list[Appeal]
    matches: int
    """Appeals that match, counted up to :data:`COUNT_CAP` + 1."""
    newer: int | None
    """The id to pass as ``after`` for the page of newer appeals; None on the first."""
    older: int | None
    """The id to pass as ``before`` for the next page; None on the last."""

    @property
    def capped(self) -> bool:
        return self.matches > COUNT_CAP


def search(filters: Filters, before: int | None = None, after: int | None = None) -> Page:
    """One page of the appeals that match, newest first, with their copies. The count
    comes first: when nothing matches, the page is not looked for (a search for an
    address no one used reads the table once, not twice)."""
    conditions = filters.conditions()
    matches = int(
        db.session.scalar(
            select(func.count()).select_from(
                select(Appeal.id).where(*conditions).limit(COUNT_CAP + 1).subquery()
            )
        )
        or 0
    )
    if not matches:
        return Page([], 0, None, None)
    query = select(Appeal).options(selectinload(Appeal.recipients)).where(*conditions)
    if after is not None:
        rows = list(
            db.session.scalars(
                query.where(Appeal.id > after).order_by(Appeal.id).limit(PAGE_SIZE + 1)
            )
        )
        appeals = list(reversed(rows[:PAGE_SIZE]))
        older = appeals[-1].id if appeals else None
        newer = appeals[0].id if appeals and len(rows) > PAGE_SIZE else None
    else:
        if before is not None:
            query = query.where(Appeal.id < before)
        rows = list(db.session.scalars(query.order_by(Appeal.id.desc()).limit(PAGE_SIZE + 1)))
        appeals = rows[:PAGE_SIZE]
        older = appeals[-1].id if len(rows) > PAGE_SIZE else None
        newer = appeals[0].id if appeals and before is not None else None
    return Page(appeals, matches, newer, older)


def applicable(filters: Filters, sources: Sequence[str]) -> int:
    """How many of the matching appeals are in one of ``sources`` (an action's)."""
    return int(
        db.session.scalar(
            select(func.count())
            .select_from(Appeal)
            .where(*filters.conditions(), Appeal.status.in_(sources))
        )
        or 0
    )


# --- The export --------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "id",
    "campaign",
    "status",
    "language",
    "country",
    "attempts",
    "created_at",
    "confirmed_at",
    "sent_at",
    "erased_at",
)
"""What every export holds: nothing that names a supporter, and no letter."""

PERSONAL_COLUMNS = ("name", "email", "status_reason")
"""Added only when the manager asks for personal data (a relay's reply may quote an
address, so the reason goes with the names)."""

EXPORT_CHUNK = 2000
"""Rows read from the database at a time."""


def export_rows(filters: Filters, personal: bool) -> Iterator[Sequence[Any]]:
    """The header, then every matching appeal in id order, read a chunk at a time (a
    server-side cursor on PostgreSQL), so 100,000 rows never sit in memory at once."""
    columns = EXPORT_COLUMNS + (PERSONAL_COLUMNS if personal else ())
    yield columns
    query = (
        select(*(getattr(Appeal, c) for c in columns))
        .where(*filters.conditions())
        .order_by(Appeal.id)
        .execution_options(yield_per=EXPORT_CHUNK)
    )
    for chunk in db.session.execute(query).partitions():
        yield from chunk


def count(filters: Filters) -> int:
    return int(
        db.session.scalar(select(func.count()).select_from(Appeal).where(*filters.conditions()))
        or 0
    )
