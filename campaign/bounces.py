"""Bounces: mail that a target's server accepted from our relay, then returned.

An appeal's envelope sender is a bounce address of its own, ``bounces+<token>@<domain>``
(VERP): the token names the appeal and is signed, so a delivery status notification
that comes back names the appeal, and the report's Final-Recipient (or the address
the parser finds) names which of its copies failed. One SMTP transaction per appeal
stays: its copies share the appeal's token. From and Reply-To do not change.

:func:`read_mailbox` reads the bounce mailbox over IMAP; :func:`parse` reads one
report with flufl.bounce (RFC 3464 DSNs and the formats of the usual MTAs, Exim's
classic text among them) and tells auto-replies apart; :func:`record` stores it:

* a hard bounce (Action: failed, 5.x.x) moves the copy to ``bounced`` with the
  reason, flags the target address (:class:`~.models.TargetFlag`) and holds every
  appeal still to go to it, until a manager decides (:func:`decide`);
* a soft one (Action: delayed, 4.x.x) is only counted: the relay goes on trying;
* an auto-reply (out of office) is counted, never as a bounce.

A report read twice counts once (``bounces.report_id`` is unique).
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import ssl
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import current_app
from sqlalchemy import and_, exists, func, or_, select, text
from sqlalchemy.exc import IntegrityError

from . import addresses, states
from .bounce_reports import (  # noqa: F401 - the names this module has always offered
    AUTO_REPLY,
    HARD,
    MAC_LENGTH,
    OTHER,
    SOFT,
    Failure,
    Report,
    appeal_for,
    envelope_sender,
    parse,
    token_for,
)
from .campaigns import all_campaigns
from .db import db, utcnow
from .models import DUE, Appeal, Bounce, Delivery, Diplomat, Recipient, Status, TargetFlag

DUPLICATE = "duplicate"
"""A report read before (its ``report_id`` is known): counted once."""

RELEASED, REROUTED = "released", "rerouted"
"""A manager's decisions about a flagged address (``target_flags.decision``)."""


# --- Recording ---------------------------------------------------------------------------


def hold_reason(address: str) -> str:
    """The reason an appeal held for a flagged address carries: releasing the address
    releases exactly the appeals held with it."""
    return f"{address} bounced: held until a manager decides"


def _key(report: Report, failure: Failure) -> str:
    """The bounce row's ``report_id``: the report's own, or, for a report naming several
    addresses, the report's and the address."""
    if len(report.failures) == 1:
        return report.report_id
    key = f"{report.report_id} {failure.address}"
    return key if len(key) <= 255 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _recipient(report: Report, address: str) -> Recipient | None:
    lowered = func.lower(Recipient.address) == address
    if report.appeal_id is not None:
        where = and_(Recipient.appeal_id == report.appeal_id, lowered)
    elif report.original_message_id:
        # No token (sent before BOUNCE_ADDRESS was set): the returned Message-ID is ours.
        where = and_(Recipient.message_id == report.original_message_id, lowered)
    else:
        return None
    return db.session.scalars(select(Recipient).where(where).limit(1)).first()


def record(report: Report, now: datetime | None = None) -> dict[str, int]:
    """Store what one report says; returns how many of each kind it counted. A report
    already recorded counts as a duplicate and changes nothing. The caller commits."""
    counts: dict[str, int] = {}
    if report.kind != "bounce":
        counts[report.kind] = 1
        return counts
    now = now or utcnow()
    keys = {_key(report, f): f for f in report.failures}
    seen = set(db.session.scalars(select(Bounce.report_id).where(Bounce.report_id.in_(keys))))
    for key, failure in keys.items():
        if key in seen:
            counts[DUPLICATE] = counts.get(DUPLICATE, 0) + 1
            continue
        copy = _recipient(report, failure.address)
        try:
            with db.session.begin_nested():
                db.session.add(
                    Bounce(
                        received_at=now,
                        address=failure.address,
                        kind=failure.kind,
                        reason=failure.reason,
                        appeal_id=copy.appeal_id if copy else report.appeal_id,
                        recipient_id=copy.id if copy else None,
                        report_id=key,
                    )
                )
        except IntegrityError:  # another reader recorded it just now
            counts[DUPLICATE] = counts.get(DUPLICATE, 0) + 1
            continue
        counts[failure.kind] = counts.get(failure.kind, 0) + 1
        if failure.kind == HARD and copy is not None:
            _hard(copy, failure, now)
    return counts


def _hard(copy: Recipient, failure: Failure, now: datetime) -> None:
    """The copy bounced; its address is flagged and what is still to go there waits."""
    if copy.status == Delivery.ACCEPTED:
        copy.status, copy.bounced_at, copy.last_reply = Delivery.BOUNCED, now, failure.reason
    flag = db.session.get(TargetFlag, failure.address)
    if flag is None:
        db.session.add(TargetFlag(address=failure.address, flagged_at=now, reason=failure.reason))
    elif flag.decision is not None:
        # A decision stands against bounces of copies sent before it, not after.
        if (
            copy.accepted_at is None
            or flag.decided_at is None
            or copy.accepted_at > flag.decided_at
        ):
            flag.decision = flag.decided_at = flag.decided_by = None
            flag.flagged_at, flag.reason = now, failure.reason
        else:
            return
    else:
        flag.reason = failure.reason
    db.session.flush()
    hold([failure.address])


# --- Holding and releasing ---------------------------------------------------------------


def flagged() -> list[str]:
    """The flagged addresses no manager has decided about."""
    return list(db.session.scalars(select(TargetFlag.address).where(TargetFlag.decision.is_(None))))


def going_to(addresses: Collection[str], among: Collection[int] | None = None) -> dict[int, str]:
    """Of the queued and retrying appeals (only ``among`` them, if given), those whose
    next try would go to one of ``addresses``: appeal id → that address.

    An appeal tried before goes to its pending copies; one never tried goes to its
    campaign's addressees and the diplomats of its supporter's country."""
    wanted = {a.lower() for a in addresses}
    found: dict[int, str] = {}
    if not wanted:
        return found
    chunks: Iterable[list[int] | None] = [None]
    if among is not None:
        ids = sorted(among)
        chunks = [ids[i : i + states.CHUNK] for i in range(0, len(ids), states.CHUNK)]
    whole, by_country = _letters_to(wanted)
    for chunk in chunks:
        due = select(Appeal.id).where(text(DUE))
        if chunk is not None:
            due = due.where(Appeal.id.in_(chunk))
        pending = select(Recipient.appeal_id, func.lower(Recipient.address)).where(
            Recipient.appeal_id.in_(due),
            Recipient.status == Delivery.PENDING,
            func.lower(Recipient.address).in_(sorted(wanted)),
        )
        found.update({appeal_id: address for appeal_id, address in db.session.execute(pending)})
        if not whole and not by_country:
            continue
        untried = select(Appeal.id, Appeal.campaign, Appeal.country).where(
            text(DUE),
            or_(
                Appeal.campaign.in_(sorted(whole)),
                *(
                    and_(Appeal.campaign == slug, Appeal.country == country)
                    for slug, country in sorted(by_country)
                ),
            ),
            ~exists().where(Recipient.appeal_id == Appeal.id),
        )
        if chunk is not None:
            untried = untried.where(Appeal.id.in_(chunk))
        for appeal_id, slug, country in db.session.execute(untried):
            found.setdefault(appeal_id, whole.get(slug) or by_country[(slug, country)])
    return found


def _letters_to(wanted: set[str]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Where the letters of untried appeals would go to a wanted address: campaign →
    address (its addressees), and (campaign, country) → address (its diplomats)."""
    whole: dict[str, str] = {}
    by_country: dict[tuple[str, str], str] = {}
    campaigns = all_campaigns()
    for slug, campaign in campaigns.items():
        for addressee in campaign.addressees:
            # Where its letters go now: an admin may have changed the address.
            address = addresses.current(addressee.email, slug).lower() if addressee.email else ""
            if address in wanted:
                whole.setdefault(slug, address)
    diplomats = db.session.execute(
        select(Diplomat.target_state, Diplomat.country, func.lower(Diplomat.email)).where(
            func.lower(Diplomat.email).in_(sorted(wanted))
        )
    ).all()
    for target_state, country, address in diplomats:
        for slug, campaign in campaigns.items():
            if campaign.diplomats_of == target_state and slug not in whole:
                by_country.setdefault((slug, country), address)
    return whole, by_country


def hold(addresses: Collection[str], among: Collection[int] | None = None) -> set[int]:
    """Hold the queued and retrying appeals bound for ``addresses`` (of ``among``, if
    given); returns the ids held. The caller commits."""
    by_address: dict[str, list[int]] = {}
    for appeal_id, address in going_to(addresses, among).items():
        by_address.setdefault(address, []).append(appeal_id)
    held: set[int] = set()
    for address, ids in by_address.items():
        moved = states.move(
            ids, (Status.QUEUED, Status.RETRYING), Status.HELD, reason=hold_reason(address)
        )
        held.update(row[0] for row in moved)
    return held


def hold_flagged(rows: list[Any], handed: Collection[int]) -> list[Any]:
    """The dispatcher's check: of the due ``(id, …)`` rows, hold those bound for a flagged
    address, and return the others. Only rows not ``handed`` to a job before are looked
    at (those were looked at then, and a flag holds what is due when it is raised); one
    query on the small flags table when nothing is flagged."""
    addresses = flagged()
    if not addresses or not rows:
        return rows
    fresh = [r[0] for r in rows if r[0] not in handed]
    held = hold(addresses, fresh) if fresh else set()
    if not held:
        return rows
    db.session.commit()
    current_app.logger.warning("held %d appeals bound for a flagged address", len(held))
    return [r for r in rows if r[0] not in held]


def decide(address: str, decision: str, *, actor: str) -> int:
    """A manager's decision about a flagged address: ``released`` (its mail goes again)
    or ``rerouted`` (:mod:`campaign.addresses` sends it to a new address). Either way
    the appeals held for it go back to the queue; returns how many. The caller commits
    (then wakes the dispatcher)."""
    if decision not in (RELEASED, REROUTED):
        raise ValueError(decision)
    address = address.lower()
    flag = db.session.get(TargetFlag, address)
    if flag is None:
        raise LookupError(address)
    flag.decision, flag.decided_at, flag.decided_by = decision, utcnow(), actor
    moved = states.move(
        None,
        Status.HELD,
        Status.QUEUED,
        reason=f"{address} {decision} by {actor}",
        values={"next_attempt_at": None, "attempts": 0, "job_id": None},
        match={"status_reason": hold_reason(address)},
    )
    return len(moved)


def held_count(address: str) -> int:
    """How many appeals wait for a decision about ``address``."""
    return int(
        db.session.scalar(
            select(func.count())
            .select_from(Appeal)
            .where(Appeal.status == Status.HELD, Appeal.status_reason == hold_reason(address))
        )
        or 0
    )


# --- The console's view ------------------------------------------------------------------


@dataclass
class Target:
    """One target address's bounces, for the console."""

    address: str
    hard: int = 0
    soft: int = 0
    last_at: datetime | None = None
    last_reason: str | None = None
    flag: TargetFlag | None = None
    held: int = 0
    appeal_ids: list[int] = field(default_factory=list)


def targets() -> list[Target]:
    """Every address that bounced or is flagged: flagged undecided first, then by the
    latest bounce."""
    found: dict[str, Target] = {}
    counts = db.session.execute(
        select(Bounce.address, Bounce.kind, func.count(), func.max(Bounce.received_at)).group_by(
            Bounce.address, Bounce.kind
        )
    )
    for address, kind, n, last in counts:
        target = found.setdefault(address, Target(address))
        setattr(target, kind if kind in (HARD, SOFT) else SOFT, n)
        if target.last_at is None or (last and last > target.last_at):
            target.last_at = last
    latest = (
        select(Bounce.address, func.max(Bounce.id).label("id")).group_by(Bounce.address).subquery()
    )
    for address, reason in db.session.execute(
        select(Bounce.address, Bounce.reason).join(latest, Bounce.id == latest.c.id)
    ):
        found[address].last_reason = reason
    for flag in db.session.scalars(select(TargetFlag)):
        found.setdefault(flag.address, Target(flag.address)).flag = flag
    reasons = {hold_reason(a): a for a in found}
    for reason, n in db.session.execute(
        select(Appeal.status_reason, func.count())
        .where(Appeal.status == Status.HELD, Appeal.status_reason.in_(sorted(reasons)))
        .group_by(Appeal.status_reason)
    ):
        found[reasons[reason]].held = n

    def order(t: Target) -> tuple[int, float]:
        undecided = t.flag is not None and t.flag.decision is None
        return (0 if undecided else 1, -(t.last_at.timestamp() if t.last_at else 0.0))

    return sorted(found.values(), key=order)


# --- The mailbox -------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    """Where the bounce mailbox is: ``imap://user:password@host:port/INBOX`` or ``imaps://``."""

    secure: bool
    host: str
    port: int
    user: str
    password: str
    folder: str

    @classmethod
    def parse(cls, url: str) -> Mailbox:
        parts = urlsplit(url)
        if parts.scheme not in ("imap", "imaps") or not parts.hostname:
            raise ValueError("BOUNCE_IMAP_URL: imap://user:password@host:port/INBOX or imaps://…")
        secure = parts.scheme == "imaps"
        return cls(
            secure,
            parts.hostname,
            parts.port or (993 if secure else 143),
            unquote(parts.username or ""),
            unquote(parts.password or ""),
            unquote(parts.path.lstrip("/")) or "INBOX",
        )

    def __str__(self) -> str:
        """The mailbox without its password, for logs."""
        scheme = "imaps" if self.secure else "imap"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.folder}"


def _connect(box: Mailbox, timeout: float) -> imaplib.IMAP4:
    """A logged-in session. A password goes over TLS only (implicit, or STARTTLS for
    ``imap://``), except to loopback, as the relay's does."""
    from .delivery.transport import is_loopback

    context = ssl.create_default_context()
    if box.secure:
        return _login(
            imaplib.IMAP4_SSL(box.host, box.port, ssl_context=context, timeout=timeout), box
        )
    session = imaplib.IMAP4(box.host, box.port, timeout=timeout)
    if not is_loopback(box.host):
        session.starttls(context)
    return _login(session, box)


def _login(session: imaplib.IMAP4, box: Mailbox) -> imaplib.IMAP4:
    session.login(box.user, box.password)
    kind, _ = session.select(_quoted(box.folder))
    if kind != "OK":
        session.logout()
        raise imaplib.IMAP4.error(f"no folder {box.folder!r} in {box}")
    return session


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_mailbox(url: str, limit: int | None = None) -> dict[str, int]:
    """Read the unseen messages of the bounce mailbox, record each (committed one by
    one), then mark it seen. Returns how many of each kind were read."""
    box = Mailbox.parse(url)
    log = current_app.logger
    totals: dict[str, int] = {"read": 0}
    session = _connect(box, float(current_app.config["MAIL_TIMEOUT"]))
    try:
        _, found = session.uid("SEARCH", "UNSEEN")
        uids = (found[0] or b"").split()[:limit]
        for uid in uids:
            _, data = session.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in data if isinstance(item, tuple)), None)
            if raw is None:
                continue
            report = parse(raw)
            counts = record(report)
            db.session.commit()
            session.uid("STORE", uid, "+FLAGS", "(\\Seen)")
            totals["read"] += 1
            for kind, n in counts.items():
                totals[kind] = totals.get(kind, 0) + n
            log.info(
                "bounce mailbox %s: %s %s (%s)",
                box,
                report.report_id,
                report.kind,
                ", ".join(f"{f.kind} {f.address}" for f in report.failures) or report.subject,
            )
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            session.logout()
    return totals
