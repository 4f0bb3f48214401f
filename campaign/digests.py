"""Digests: instead of one e-mail per supporter, each target gets one message a period.

Parliaments and ministries quarantine floods of identical mail (the European
Parliament held some 457,000 protest messages in 2013). A campaign in **digest**
mode (``campaign_options.delivery_mode``) sends each target, every
``digest_hours`` (24 by default), one message with the appeal's text once, the
number of supporters, each supporter's name, country and sentence, and the same as
a CSV attachment. In **capped** mode the first ``daily_cap`` appeals confirmed on a
day (the main addressee's day) go one by one, and the rest go in the digest.

Periods are aligned: they start at ``DIGEST_HOUR`` (8:00) in the main addressee's
time zone and last ``digest_hours``, so a daily digest goes every morning at eight,
a weekly one (168) every Monday. A digest is due when its period has begun, none
went since, and an appeal confirmed before that moment waits. The dispatcher looks
every :data:`CHECK_SECONDS` (:func:`run_due`); ``flask appeals digest`` sends one at
once.

Digest appeals keep the usual states: confirmed, they are ``queued``; the
dispatcher never hands them to a per-supporter batch (only ``retrying`` ones, whose
mail already began one by one, and a capped campaign's appeals within the day's
cap). A digest claims its appeals with the same guarded move as a batch
(``queued`` → ``sending``, stamped with its own job id), so an appeal goes in a
digest or in a batch, never both. On the relay's acceptance each appeal's copy to
that target is recorded (``appeal_recipients``, with ``digest_id``), committed at
once; when every target is done, appeals whose copies are settled are ``sent``,
and those still pending (relay down, a 4xx) go back to ``queued`` for the next
try, which goes only to the targets still pending. Receipts follow as for any
appeal whose main copy was accepted.

A digest carries at most ``DIGEST_MAX_SUPPORTERS`` supporters and about
``DIGEST_MAX_BYTES`` of names and sentences; more are split into parts ("part 2 of
3"), each a message and a ``digests`` row of its own. A digest is sent from the
dispatcher's process: it is one message per target a period, not a stream.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import and_, bindparam, func, insert, or_, select, text, update

from . import mime, sending, snapshots, states
from .campaigns import Campaign, get_campaign
from .db import UTCDateTime, db, utcnow
from .delivery.recipients import STORED, Copy
from .digest_message import Supporter, clean, digest_message, letter_language, split
from .letters import country_name_in, diplomats_of
from .mail import TEST_MARK, Outgoing, sender_domain, staff_copy
from .models import DUE, Appeal, Delivery, Digest, Mode, Recipient, Status
from .settings import RelaySettings

CHECK_SECONDS = 60.0
"""How often the dispatcher looks for a due digest."""

JOB_PREFIX = "digest-"
"""How a digest's claim stamps ``appeals.job_id``."""

CAP_KEY = "appeals:capped:{slug}:{day}"
"""Redis set of the appeals a capped campaign sent one by one on a day (its size is
the day's count; an appeal handed out again is not counted twice)."""

CAP_KEY_SECONDS = 3 * 86400
"""How long a day's set is kept."""

_ANCHOR = date(2024, 1, 1)
"""A Monday: periods of any length are counted from it, so a weekly digest goes on
Mondays and a daily one every day at the same hour."""

_appeals = Appeal.__table__
_recipients = Recipient.__table__


# --- modes and periods ---------------------------------------------------------------------


def mode_of(slug: str) -> snapshots.ModeEntry | None:
    """The campaign's digest settings, or None when it sends one e-mail per supporter."""
    return snapshots.delivery_modes().get(slug)


def _zone(campaign: Campaign) -> ZoneInfo:
    return ZoneInfo(campaign.to.timezone)


def period(campaign: Campaign, hours: int, now: datetime) -> tuple[datetime, datetime]:
    """The digest period that ``now`` falls in, (start, end) in UTC: wall-clock hours of
    the main addressee, counted from ``DIGEST_HOUR`` on :data:`_ANCHOR`."""
    zone = _zone(campaign)
    hour = int(current_app.config.get("DIGEST_HOUR", 8))
    anchor = datetime.combine(_ANCHOR, datetime.min.time()).replace(hour=hour % 24)
    local = now.astimezone(zone).replace(tzinfo=None)
    step = timedelta(hours=max(1, hours))
    start = anchor + step * ((local - anchor) // step)
    return (
        start.replace(tzinfo=zone).astimezone(UTC),
        (start + step).replace(tzinfo=zone).astimezone(UTC),
    )


def cap_day(campaign: Campaign, now: datetime) -> tuple[date, datetime]:
    """The main addressee's calendar day at ``now``, and its start in UTC."""
    zone = _zone(campaign)
    day = now.astimezone(zone).date()
    return day, datetime.combine(day, datetime.min.time()).replace(tzinfo=zone).astimezone(UTC)


def _last_sent(slug: str) -> datetime | None:
    return db.session.scalar(  # type: ignore[no-any-return]
        select(func.max(Digest.period_end)).where(Digest.campaign == slug, Digest.status == "sent")
    )


def next_digest_at(
    slug: str, confirmed_at: datetime | None = None, now: datetime | None = None
) -> datetime | None:
    """When the next digest of this campaign goes (for an appeal confirmed at
    ``confirmed_at``, or for the oldest one waiting): the current period's start if
    it is owed and has not gone yet (within a minute), else the next period's. None
    if the campaign has no digest."""
    entry = mode_of(slug)
    if entry is None:
        return None
    now = now or utcnow()
    start, end = period(get_campaign(slug), entry.digest_hours, now)
    if confirmed_at is None:
        confirmed_at = db.session.scalar(
            select(func.min(func.coalesce(Appeal.confirmed_at, Appeal.created_at))).where(
                text(DUE), Appeal.status == Status.QUEUED, Appeal.campaign == slug
            )
        )
    if confirmed_at is not None and confirmed_at < start:
        last = _last_sent(slug)
        if last is None or last < start:
            return start
    return end


# --- the capped mode's daily count ----------------------------------------------------------


def _redis() -> Any:
    from .delivery.queue import rq

    return rq.connection()


def _cap_key(slug: str, day: date) -> str:
    return CAP_KEY.format(slug=slug, day=day.isoformat())


def sent_one_by_one(slug: str, day: date) -> int:
    """How many appeals of a capped campaign went one by one on ``day``."""
    return int(_redis().scard(_cap_key(slug, day)))


def _allow(slug: str, day: date, cap: int, ids: list[int]) -> list[int]:
    """Of ``ids`` (queued appeals of a capped campaign, confirmed today), those that go
    one by one: the ones already counted today (paced, or handed out again), and new
    ones while the day's count is under ``cap``. Counts the new ones."""
    key = _cap_key(slug, day)
    redis = _redis()
    pipe = redis.pipeline()
    pipe.smismember(key, ids)
    pipe.scard(key)
    members, count = pipe.execute()
    allowed = [i for i, known in zip(ids, members, strict=True) if known]
    room = max(0, cap - int(count))
    new = [i for i, known in zip(ids, members, strict=True) if not known][:room]
    if new:
        pipe = redis.pipeline()
        pipe.sadd(key, *new)
        pipe.expire(key, CAP_KEY_SECONDS)
        pipe.execute()
    return sorted(allowed + new)


def one_by_one(
    modes: Mapping[str, snapshots.ModeEntry], paused: Iterable[str], now: datetime, limit: int
) -> list[tuple[int, str]]:
    """The due (id, campaign) of digest and capped campaigns that still go one by one:
    ``retrying`` appeals (their mail began one by one before the mode changed), and in
    capped mode the queued appeals confirmed today, up to the day's cap. The
    dispatcher calls this only when some campaign is in one of these modes."""
    held = set(paused)
    slugs = sorted(s for s in modes if s not in held)
    if not slugs:
        return []
    today: dict[str, tuple[date, datetime]] = {}
    wanted = [Appeal.status == Status.RETRYING]
    for slug in slugs:
        if modes[slug].mode == Mode.CAPPED and modes[slug].daily_cap:
            today[slug] = cap_day(get_campaign(slug), now)
            wanted.append(and_(Appeal.campaign == slug, Appeal.confirmed_at >= today[slug][1]))
    rows = db.session.execute(
        select(Appeal.id, Appeal.campaign, Appeal.status)
        .where(
            text(DUE),
            or_(Appeal.next_attempt_at.is_(None), Appeal.next_attempt_at <= now),
            Appeal.campaign.in_(slugs),
            or_(*wanted),
        )
        .order_by(Appeal.id)
        .limit(limit)
    ).all()
    out = [(r.id, r.campaign) for r in rows if r.status == Status.RETRYING]
    queued: dict[str, list[int]] = {}
    for r in rows:
        if r.status == Status.QUEUED and r.campaign in today:
            queued.setdefault(r.campaign, []).append(r.id)
    for slug, ids in queued.items():
        cap = int(modes[slug].daily_cap or 0)
        out += [(i, slug) for i in _allow(slug, today[slug][0], cap, ids)]
    return out


def goes_in_digest(appeal: Any, now: datetime | None = None) -> datetime | None:
    """For a waiting appeal (a row with campaign, status, confirmed_at, id): when the
    digest it will go in is sent, or None if it goes one by one."""
    if appeal.status != Status.QUEUED:
        return None
    entry = mode_of(appeal.campaign)
    if entry is None:
        return None
    now = now or utcnow()
    if entry.mode == Mode.CAPPED:
        day, start = cap_day(get_campaign(appeal.campaign), now)
        confirmed = appeal.confirmed_at or appeal.created_at
        if confirmed is not None and confirmed >= start:
            try:
                key = _cap_key(appeal.campaign, day)
                counted = _redis().sismember(key, appeal.id)
                full = sent_one_by_one(appeal.campaign, day) >= int(entry.daily_cap or 0)
            except Exception:  # noqa: BLE001 - the broker is down: say nothing rather than wrong
                return None
            if counted or not full:
                return None
    return next_digest_at(appeal.campaign, appeal.confirmed_at, now)  # type: ignore[no-any-return]


# --- who gets a digest ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One addressee with an e-mail address; a diplomat's digest carries only the
    supporters of the countries they are accredited to (``countries``)."""

    name: str
    address: str
    role: str
    countries: frozenset[str] | None = None

    def takes(self, country: str) -> bool:
        return self.countries is None or country in self.countries


def _rerouted(slug: str) -> Any:
    """Address → the address in force (:func:`campaign.addresses.current`: changes an
    admin recorded at run time), or the address itself where that module is absent."""
    try:
        from .addresses import current
    except ImportError:  # pragma: no cover - the address changes are another part's
        return lambda address: address
    return lambda address: current(address, slug)


def targets(campaign: Campaign) -> list[Target]:
    """The campaign's addressees with e-mail, then each diplomat; one per address."""
    now_at = _rerouted(campaign.slug)
    found: dict[str, Target] = {}

    def add(name: str, address: str, role: str, country: str | None) -> None:
        address = now_at(address)
        key = address.lower()
        known = found.get(key)
        if known is None:
            found[key] = Target(name, address, role, frozenset({country}) if country else None)
        elif known.countries is not None:
            more = known.countries | {country} if country else None
            found[key] = Target(known.name, known.address, known.role, more)

    for addressee in campaign.addressees:
        if addressee.email:
            add(addressee.name, addressee.email, addressee.role, None)
    for country, people in sorted(diplomats_of(campaign).items()):
        for diplomat in people:
            if diplomat.email:
                add(diplomat.name, diplomat.email, "cc", country)
    return list(found.values())


# --- sending --------------------------------------------------------------------------------


@dataclass
class Report:
    """What one digest run did."""

    campaign: str
    claimed: int = 0
    messages: int = 0
    accepted: int = 0
    failed: int = 0
    sent: int = 0
    queued: int = 0
    appeals_failed: int = 0
    digests: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.campaign}: {self.claimed} appeals, {self.messages} digest message(s), "
            f"{self.accepted} accepted, {self.failed} not; {self.sent} appeals sent, "
            f"{self.queued} back in the queue, {self.appeals_failed} failed"
        )


def _claimable(slug: str, entry: snapshots.ModeEntry, now: datetime) -> list[int]:
    """The queued appeals of the campaign that go in its digest now."""
    rows = db.session.execute(
        select(Appeal.id, Appeal.confirmed_at, Appeal.created_at)
        .where(text(DUE), Appeal.status == Status.QUEUED, Appeal.campaign == slug)
        .order_by(Appeal.id)
    ).all()
    if entry.mode != Mode.CAPPED:
        return [r.id for r in rows]
    day, start = cap_day(get_campaign(slug), now)
    earlier = [r.id for r in rows if (r.confirmed_at or r.created_at) < start]
    today = [r.id for r in rows if (r.confirmed_at or r.created_at) >= start]
    if not today or sent_one_by_one(slug, day) < int(entry.daily_cap or 0):
        return earlier  # today's still go one by one while the cap allows
    members = _redis().smismember(_cap_key(slug, day), today)
    return sorted(earlier + [i for i, known in zip(today, members, strict=True) if not known])


def due_digests(now: datetime | None = None) -> list[str]:
    """The campaigns whose digest is due: their period began, none went since, none
    failed in the last ``DIGEST_RETRY_MINUTES``, and an appeal confirmed before the
    period began waits."""
    now = now or utcnow()
    retry = timedelta(minutes=float(current_app.config.get("DIGEST_RETRY_MINUTES", 10)))
    due = []
    for slug, entry in sorted(snapshots.delivery_modes().items()):
        start, _ = period(get_campaign(slug), entry.digest_hours, now)
        last = _last_sent(slug)
        if last is not None and last >= start:
            continue
        failed_lately = db.session.scalar(
            select(func.count())
            .select_from(Digest)
            .where(Digest.campaign == slug, Digest.status == "failed")
            .where(Digest.created_at >= now - retry)
        )
        if failed_lately:
            continue
        waiting = db.session.scalar(
            select(Appeal.id)
            .where(text(DUE), Appeal.status == Status.QUEUED, Appeal.campaign == slug)
            .where(func.coalesce(Appeal.confirmed_at, Appeal.created_at) < start)
            .limit(1)
        )
        if waiting is not None:
            due.append(slug)
    return due


_CLAIMED = ("name", "country", "message", "confirmed_at", "created_at")

_HEARTBEAT = (
    update(_appeals)
    .where(_appeals.c.status == Status.SENDING, _appeals.c.job_id == bindparam("job"))
    .values(updated_at=bindparam("now", type_=UTCDateTime))
)


@dataclass(eq=False)
class _Copy(Copy):
    """One appeal's copy to one target, as this run changes it: the engine's copy
    (:class:`campaign.delivery.recipients.Copy`), with its appeal and its digest."""

    appeal_id: int = 0
    digest_id: int | None = None


def _new_copy(appeal_id: int, address: str, name: str, role: str) -> _Copy:
    return _Copy(address, name, role, appeal_id=appeal_id)


def _stored(appeal_ids: list[int]) -> dict[tuple[int, str], _Copy]:
    found: dict[tuple[int, str], _Copy] = {}
    for chunk in range(0, len(appeal_ids), states.CHUNK):
        ids = appeal_ids[chunk : chunk + states.CHUNK]
        for r in db.session.execute(select(_recipients).where(_recipients.c.appeal_id.in_(ids))):
            found[(r.appeal_id, r.address.lower())] = _Copy(
                **{f: getattr(r, f) for f in STORED},
                id=r.id,
                appeal_id=r.appeal_id,
                digest_id=r.digest_id,
            )
    return found


_UPDATE = (
    update(_recipients)
    .where(_recipients.c.id == bindparam("_id"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        last_reply=bindparam("last_reply"),
        next_attempt_at=None,
        accepted_at=bindparam("accepted_at"),
        message_id=bindparam("message_id"),
        digest_id=bindparam("digest_id"),
    )
)


def _write(copies: list[_Copy]) -> None:
    """Store these copies: new ones inserted (their ids kept), known ones updated."""
    new = [c for c in copies if c.id is None]
    known = [c for c in copies if c.id is not None]
    fields = ("status", "attempts", "last_reply", "accepted_at", "message_id", "digest_id")
    if new:
        rows = [
            {"appeal_id": c.appeal_id, "address": c.address, "name": c.name[:200], "role": c.role}
            | {f: getattr(c, f) for f in fields}
            for c in new
        ]
        by_key = {(c.appeal_id, c.address): c for c in new}
        inserted = db.session.execute(
            insert(_recipients).returning(
                _recipients.c.id, _recipients.c.appeal_id, _recipients.c.address
            ),
            rows,
        )
        for row in inserted:
            by_key[(row.appeal_id, row.address)].id = row.id
    if known:
        db.session.execute(
            _UPDATE, [{"_id": c.id} | {f: getattr(c, f) for f in fields} for c in known]
        )


def _verdict(result: Any, address: str, test_to: str | None) -> tuple[Any, Any]:
    from .delivery.policy import verdicts
    from .delivery.transport import Reply

    replies = verdicts(result)
    if test_to:
        verdict, reply = next(iter(replies.values()))
        return verdict, Reply(reply.code, f"{TEST_MARK}sent to {test_to} instead: {reply.text}")
    return replies[address]


def send_digest(
    slug: str,
    now: datetime | None = None,
    *,
    scheduled: bool = True,
    relay: RelaySettings | None = None,
    transport: Any = None,
) -> Report:
    """Send the campaign's digest to every target now: claim its waiting appeals, one
    message (or several parts) per target, and record every outcome. ``scheduled``:
    the period ends at its start (the dispatcher's run); else it ends now (an
    operator's ``--now``)."""
    from .delivery.jobs import connection
    from .delivery.policy import Verdict
    from .delivery.runner import transmit
    from .delivery.transport import SessionLost
    from .settings import relay_settings

    now = now or utcnow()
    report = Report(slug)
    entry = mode_of(slug) or snapshots.ModeEntry(slug, Mode.DIGEST, 24, None)
    gate = sending.read()
    if gate.holds(slug):
        return report  # paused: the appeals wait, queued
    campaign = get_campaign(slug)
    ids = _claimable(slug, entry, now)
    if not ids:
        return report
    job = JOB_PREFIX + secrets.token_hex(12)
    rows = states.move(
        ids, Status.QUEUED, Status.SENDING, values={"job_id": job}, returning=_CLAIMED, at=now
    )
    db.session.commit()
    report.claimed = len(rows)
    if not rows:
        return report
    relay = relay or relay_settings()
    transport = transport or connection(relay)
    test_to = gate.test_address(slug)
    start, end = period(campaign, entry.digest_hours, now)
    period_end = start if scheduled else now
    last = _last_sent(slug)
    language = letter_language(campaign)
    supporters = {
        r.id: Supporter(
            r.id,
            clean(r.name)[:200],
            r.country,
            country_name_in(r.country, language),
            clean(r.message, lines=True),
            r.confirmed_at,
        )
        for r in sorted(rows, key=lambda r: (r.confirmed_at or r.created_at, r.id))
    }
    earliest = min((s.confirmed_at for s in supporters.values() if s.confirmed_at), default=now)
    period_start = last or earliest
    copies = _stored(list(supporters))
    everyone = targets(campaign)
    mine: dict[int, list[_Copy]] = {i: [] for i in supporters}  # each appeal's copies, per target
    ready: deque[tuple[int, Outgoing]] = deque()
    pending: list[tuple[int, Target, list[Supporter]]] = []  # by the key ``ready`` gives
    most = int(current_app.config.get("DIGEST_MAX_SUPPORTERS", 5000))
    max_bytes = int(current_app.config.get("DIGEST_MAX_BYTES", 5_000_000))
    for target in everyone:
        members = []
        for appeal_id, s in supporters.items():
            if not target.takes(s.country):
                continue
            key = (appeal_id, target.address.lower())
            copy = copies.get(key)
            if copy is None:
                copy = copies[key] = _new_copy(appeal_id, target.address, target.name, target.role)
            mine[appeal_id].append(copy)
            if copy.status == Delivery.PENDING:
                members.append(s)
        pieces = split(members, most, max_bytes)
        for number, piece in enumerate(pieces, 1):
            digest = Digest(
                campaign=slug,
                address=target.address,
                name=target.name[:200],
                period_start=period_start,
                period_end=period_end,
                created_at=now,
                supporters=len(piece),
                status="pending",
                message_id=mime.make_message_id(sender_domain(relay)),
            )
            db.session.add(digest)
            db.session.flush()
            message = digest_message(
                campaign,
                target,
                piece,
                relay=relay,
                total=len(members),
                part=number,
                parts=len(pieces),
                day=period_end.astimezone(_zone(campaign)).date(),
                message_id=digest.message_id or "",
            )
            if test_to:
                message = staff_copy(message, test_to, [target.address])
            ready.append((len(pending), message))
            pending.append((digest.id, target, piece))
            report.digests.append(digest.id)
    db.session.commit()
    report.messages = len(ready)
    try:
        for key, result in transmit(transport, ready):
            digest_id, target, piece = pending[key]
            at = utcnow()
            digest = db.session.get(Digest, digest_id)
            assert digest is not None
            changed = []
            for s in piece:
                copy = copies[(s.appeal_id, target.address.lower())]
                copy.message_id, copy.digest_id = digest.message_id, digest_id
                changed.append(copy)
            if isinstance(result, SessionLost):
                digest.status, digest.last_reply = "failed", f"relay unavailable: {result.reason}"
                report.failed += 1
            else:
                verdict, reply = _verdict(result, target.address, test_to)
                digest.last_reply = str(reply)
                for copy in changed:
                    copy.attempts += 1
                    copy.last_reply = str(reply)
                    if verdict is Verdict.ACCEPTED:
                        copy.status, copy.accepted_at = Delivery.ACCEPTED, at
                    elif verdict is Verdict.PERMANENT:
                        copy.status = Delivery.FAILED
                if verdict is Verdict.ACCEPTED:
                    digest.status, digest.sent_at = "sent", at
                    report.accepted += 1
                else:
                    digest.status = "failed"
                    report.failed += 1
                _write(changed)
            db.session.execute(_HEARTBEAT, {"job": job, "now": at})
            db.session.commit()  # an acceptance is on record before the next message goes
    finally:
        transport.close()
        _settle(job, campaign, mine, report)
    return report


def _settle(job: str, campaign: Campaign, mine: dict[int, list[_Copy]], report: Report) -> None:
    """Move each claimed appeal on: ``sent`` when its copies are settled and the main
    one accepted, ``failed`` when the main one was refused for good, else back to
    ``queued`` for the next digest (which goes only to the copies still pending)."""
    db.session.rollback()  # whatever a failure left half-done; acceptances are committed
    # What the database holds decides: a copy this run changed but could not store
    # (an error on the way) is still pending.
    stored = _stored(list(mine))
    groups: dict[tuple[str, str | None], list[int]] = {}
    dropped: list[_Copy] = []
    for appeal_id, ours in mine.items():
        copies = [
            stored.get((appeal_id, c.address.lower()))
            or _new_copy(appeal_id, c.address, c.name, c.role)
            for c in ours
        ]
        main = next((c for c in copies if c.role == "to"), None)
        pending = [c for c in copies if c.status == Delivery.PENDING]
        if main is not None and main.status == Delivery.FAILED:
            for c in pending:
                c.status, c.last_reply = (
                    Delivery.FAILED,
                    "not sent: the main addressee's copy failed",
                )
                dropped.append(c)
            outcome = (Status.FAILED, f"{main.address}: {main.last_reply}")
        elif pending or main is None:
            tried = [c for c in pending if c.last_reply]
            reason = "; ".join(f"{c.address}: {c.last_reply}" for c in tried[:3])
            outcome = (Status.QUEUED, f"waits for the next digest: {reason or 'not sent'}")
        else:
            refused = [f"copy to {c.address} refused: {c.last_reply}" for c in copies]
            refused = [
                r for r, c in zip(refused, copies, strict=True) if c.status == Delivery.FAILED
            ]
            outcome = (Status.SENT, "; ".join(refused) or None)
        groups.setdefault(outcome, []).append(appeal_id)
    if dropped:
        _write(dropped)
    now = utcnow()
    for (status, reason), ids in groups.items():
        values: dict[str, Any] = {"job_id": None, "next_attempt_at": None}
        if status == Status.SENT:
            values["sent_at"] = now
        moved = states.move(
            ids, Status.SENDING, status, reason=reason, values=values, match={"job_id": job}
        )
        count = len(moved)
        if status == Status.SENT:
            report.sent += count
        elif status == Status.QUEUED:
            report.queued += count
        else:
            report.appeals_failed += count
    db.session.commit()
    if report.failed:
        current_app.logger.warning("digest of %s: %s", campaign.slug, report)


def run_due(now: datetime | None = None) -> list[Report]:
    """Send every digest that is due (the dispatcher calls this every :data:`CHECK_SECONDS`)."""
    if not snapshots.delivery_modes():
        return []
    return [send_digest(slug, now) for slug in due_digests(now)]


def digest_dates(appeal_ids: Iterable[int]) -> dict[int, datetime]:
    """When the digest that carried each appeal's main copy went, for appeals that went
    in one."""
    ids = list(appeal_ids)
    if not ids:
        return {}
    rows = db.session.execute(
        select(_recipients.c.appeal_id, Digest.sent_at)
        .join(Digest, Digest.id == _recipients.c.digest_id)
        .where(
            _recipients.c.appeal_id.in_(ids),
            _recipients.c.role == "to",
            _recipients.c.status == Delivery.ACCEPTED,
        )
    ).all()
    return {r.appeal_id: r.sent_at for r in rows if r.sent_at is not None}


def with_mode(eta: Any, slug: str, now: datetime) -> Any:
    """The console's ETA (:class:`campaign.console.Eta`) under the campaign's mode: in
    digest mode everything waiting goes with the next digest; in capped mode what the
    day's cap leaves goes one by one at the pacing rate, the rest with the digest."""
    entry = mode_of(slug)
    if entry is None or not eta.waiting:
        return eta
    digest_at = max(now, next_digest_at(slug, None, now) or now)
    when = digest_at.strftime("%Y-%m-%d %H:%M UTC")
    if entry.mode == Mode.DIGEST:
        eta.finishes_at = digest_at
        eta.bottleneck = f"digest mode: everything waiting goes in the digest of {when}"
        return eta
    cap = int(entry.daily_cap or 0)
    try:
        left = max(0, cap - sent_one_by_one(slug, cap_day(get_campaign(slug), now)[0]))
    except Exception:  # noqa: BLE001 - the broker is down: assume the day's cap is spent
        left = 0
    if eta.waiting <= left:
        return eta
    eta.finishes_at = max(eta.finishes_at or now, digest_at)
    eta.bottleneck = (
        f"capped mode: {left} more of {cap} today one by one, "
        f"the other {eta.waiting - left} in the digest of {when}"
    )
    return eta
