"""Where an appeal is, for its owner; and how many appeals a campaign has sent.

The status page (``/appeal/<public_id>``), the confirmed page and the receipt read an
appeal's progress here. Its link is the appeal's public id, a uuid4: whoever holds it
is the owner, who got it by e-mail. So the page shows what the owner knows already or
may know: the state, its times, and each official's copy. Never the supporter's name,
address or sentence, nor the relay's replies (they may quote an address).

When an appeal waits, the page says until when, as pacing sees it: the main copy's
next try if pacing or a transient error set one, else the appeals queued ahead of it
for the same addressee, at the pacing rate in force. Nobody is promised "the next
few minutes" when 10,000 appeals are ahead at 60 an hour.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, select, text

from .campaigns import get_campaign
from .db import db, utcnow
from .delivery.pacing import PacingRules, pacing_rules, seconds_until_open
from .mail import TEST_MARK
from .models import DUE, Appeal, Delivery, Recipient, SelfReport, Status

SOON = timedelta(minutes=10)
"""A wait shorter than this is "in the next few minutes", not a time."""

COUNT_SECONDS = 5.0
"""How long the public count of appeals sent is reused: a spike of page views costs
one COUNT per process every few seconds, not one each."""

WAITING = (Status.QUEUED, Status.RETRYING, Status.SENDING)
"""States of an appeal on its way, whose time to go can be told."""


@dataclass(frozen=True)
class CopyProgress:
    """One addressee's copy, as its owner may see it."""

    name: str
    role: str
    status: str
    accepted_at: datetime | None
    test: bool = False
    """Accepted in test mode: it went to a staff address instead of this addressee."""


@dataclass(frozen=True)
class Progress:
    public_id: str
    campaign: str
    status: str
    created_at: datetime
    confirmed_at: datetime | None
    sent_at: datetime | None
    erased: bool
    copies: tuple[CopyProgress, ...]
    expected_at: datetime | None
    """When a waiting appeal should go, if not soon (None: soon, or not waiting)."""
    digest_at: datetime | None = None
    """When the digest that carried it to its main addressee went (digest mode)."""
    next_digest_at: datetime | None = None
    """When the digest it waits for goes (digest mode; None: it goes one by one)."""

    @property
    def main_accepted(self) -> bool:
        return any(c.role == "to" and c.status == Delivery.ACCEPTED for c in self.copies)

    @property
    def in_test(self) -> bool:
        """Sent in test mode: to a staff address, not to its addressees."""
        return any(c.test for c in self.copies)


def is_public_id(value: str) -> bool:
    """A public id as we write them (a lowercase uuid), checked before any query."""
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def find(public_id: str) -> Progress | None:
    """The progress of the appeal with this public id, or None."""
    if not is_public_id(public_id):
        return None
    appeal = db.session.scalar(select(Appeal).filter_by(public_id=public_id))
    if appeal is None:
        return None
    copies = tuple(
        CopyProgress(
            r.name or r.address,
            r.role,
            r.status,
            r.accepted_at,
            test=TEST_MARK in (r.last_reply or ""),  # "250 [TEST] sent to … instead"
        )
        for r in sorted(appeal.recipients, key=lambda r: (r.role != "to", r.id))
    )
    return Progress(
        public_id=appeal.public_id,
        campaign=appeal.campaign,
        status=appeal.status,
        created_at=appeal.created_at,
        confirmed_at=appeal.confirmed_at,
        sent_at=appeal.sent_at,
        erased=appeal.erased_at is not None,
        copies=copies,
        expected_at=expected_at(appeal, appeal.recipients),
        **_digest(appeal),
    )


def _digest(appeal: Appeal) -> dict[str, datetime | None]:
    """Which digest carried the appeal, or will (:mod:`campaign.digests`); a query only
    for an appeal that went in one, or waits in a campaign that sends them."""
    from . import digests

    found: dict[str, datetime | None] = {}
    if any(r.digest_id for r in appeal.recipients):
        found["digest_at"] = digests.digest_dates([appeal.id]).get(appeal.id)
    if appeal.status == Status.QUEUED:
        found["next_digest_at"] = digests.goes_in_digest(appeal)
    return found


def expected_at(
    appeal: Any, copies: list[Recipient], now: datetime | None = None
) -> datetime | None:
    """When ``appeal`` (a row with id, campaign, status, next_attempt_at) should reach
    its main addressee, if it waits and not just for a few minutes; else None."""
    if appeal.status not in WAITING:
        return None
    now = now or utcnow()
    main = next((c for c in copies if c.role == "to"), None)
    if main is not None and main.status != Delivery.PENDING:
        return None  # the main addressee has it; copies may still wait
    moment = (main.next_attempt_at if main is not None else None) or appeal.next_attempt_at
    if appeal.status == Status.QUEUED:
        # Pacing gives every waiting copy the next token's time; the queue ahead of
        # this one tells how many tokens it waits for.
        by_backlog = _by_backlog(appeal, now)
        if by_backlog is not None and (moment is None or by_backlog > moment):
            moment = by_backlog
    if moment is None or moment - now < SOON:
        return None
    return moment


def expected_after_confirm(appeal: Any) -> datetime | None:
    """When an appeal just confirmed (a row with id and campaign) should go, if not soon."""
    now = utcnow()
    moment = _by_backlog(appeal, now)
    return moment if moment is not None and moment - now >= SOON else None


def _by_backlog(appeal: Any, now: datetime) -> datetime | None:
    """The appeals due ahead of this one, at the pacing rate of its main addressee."""
    rules = pacing_rules()
    if not rules.enabled:
        return None
    ahead = db.session.scalar(
        select(func.count())
        .select_from(Appeal)
        .where(text(DUE), Appeal.campaign == appeal.campaign, Appeal.id < appeal.id)
    )
    per_hour = min(rules.per_domain_per_hour, rules.per_address_per_hour)
    seconds = (ahead or 0) * 3600.0 / per_hour
    if not rules.business_hours_only:
        return now + timedelta(seconds=seconds)
    return _within_hours(rules, get_campaign(appeal.campaign).to.timezone, now, seconds)


def _within_hours(rules: PacingRules, timezone: str, start: datetime, seconds: float) -> datetime:
    """``seconds`` of sending, counted only in the target's business hours."""
    moment = start
    for _ in range(5000):  # a day each: more than ten years of backlog
        moment += timedelta(seconds=seconds_until_open(rules, timezone, moment))
        local = moment.astimezone(ZoneInfo(timezone))
        closes = local.replace(hour=rules.closes_at, minute=0, second=0, microsecond=0)
        open_left = (closes - local).total_seconds()
        if seconds <= open_left:
            return moment + timedelta(seconds=seconds)
        seconds -= open_left
        moment = closes.astimezone(UTC)
    return moment


def sent_count(slug: str) -> int:
    """Appeals of this campaign sent so far (synthetic load, which has no link, is not
    counted), from a count at most :data:`COUNT_SECONDS` old."""
    return _cached_count(
        "sent_counts",
        slug,
        select(func.count())
        .select_from(Appeal)
        .where(
            Appeal.campaign == slug,
            Appeal.status == Status.SENT,
            Appeal.token_issued_at.is_not(None),
        ),
    )


def self_sent_count(slug: str) -> int:
    """Supporters of this campaign who said they sent the letter from their own
    mailbox ("self-sent (reported)", :mod:`campaign.selfsend`): their word, not
    delivered mail, so never part of :func:`sent_count`. At most
    :data:`COUNT_SECONDS` old."""
    return _cached_count(
        "self_sent_counts",
        slug,
        select(func.count()).select_from(SelfReport).where(SelfReport.campaign == slug),
    )


def _cached_count(name: str, slug: str, query: Any) -> int:
    """``query``'s count for ``slug``, reused for :data:`COUNT_SECONDS` per process."""
    cache: dict[str, tuple[float, int]] = current_app.extensions.setdefault(name, {})
    lock: threading.Lock = current_app.extensions.setdefault(f"{name}_lock", threading.Lock())
    now = time.monotonic()
    cached = cache.get(slug)
    if cached is not None and cached[0] > now:
        return cached[1]
    # One thread counts; the others show the count they have meanwhile.
    if not lock.acquire(blocking=cached is None):
        return cached[1] if cached is not None else 0
    try:
        count = db.session.scalar(query)
        cache[slug] = (time.monotonic() + COUNT_SECONDS, int(count or 0))
    finally:
        lock.release()
    return cache[slug][1]
