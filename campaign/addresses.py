"""Addressees' e-mail addresses changed at run time, and the mail re-routed with them.

An Urgent Action's addressees come from its campaign file, which is read-only while
the application runs, and from the diplomats on file. When a target's address
changes (a bounce says the mailbox is gone, a ministry announces a new one), an
admin records the change here (:func:`change`):

* every letter composed from then on goes to the new address: :func:`current` maps a
  campaign file's addressee through the changes (a→b, then b→c: a goes to c), for
  one campaign or every campaign. A diplomat's address is its row's (one owner per
  fact): the change writes the new address into the ``diplomats`` table itself;
* with ``reroute``, in the same transaction, the copies already written to the old
  address that have not reached it go to the new one: pending copies (their appeal
  queued, retrying or held), bounced copies, and copies the relay refused. Each goes
  back to ``pending`` with its tries reset, in bulk statements. Its appeal goes
  again (``sent``, ``failed`` and ``retrying`` appeals move to ``queued``; accepted
  copies never go twice), and an appeal held for that address (its hold names it: a
  flagged target) is released. Each affected appeal records the change as an event.

An appeal being sent at that moment is never touched (the same rule as the managers'
steering): its copies are left as they are and counted, and recording the same change
again once it is done re-routes what is left. The old address of a campaign file's
addressee keeps receiving until each process's snapshot of the changes expires (at
most :data:`campaign.snapshots.TTL` seconds; at once in the process that made it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from email_validator import EmailNotValidError
from flask_babel import gettext as _
from sqlalchemy import and_, case, delete, exists, func, or_, select, update

from . import audit, snapshots, states
from .campaigns import all_campaigns
from .db import db, utcnow
from .exceptions import InvalidInput
from .intake import normalise_email
from .models import AddressChange, Appeal, Delivery, Diplomat, Recipient, Status, TargetFlag

ADDRESS_MAX = 254
"""The longest address an SMTP path takes (RFC 5321 4.5.3.1.3)."""

DROPPED = "not sent: the main addressee's copy failed"
"""What :func:`campaign.delivery.recipients.outcome` writes in the copies it drops when
the main addressee's copy fails: they were never refused, so they go again with it."""

UNSETTLED = (Delivery.PENDING, Delivery.BOUNCED, Delivery.FAILED)
"""The copies a change can re-route: not yet accepted, or accepted and bounced."""

ROUTABLE = (Status.QUEUED, Status.RETRYING, Status.HELD, Status.SENT, Status.FAILED)
"""The appeals whose copies a change can re-route: any not being sent, cancelled, or
still awaiting confirmation (those have no copies; their letter is composed later)."""

REQUEUED = (Status.SENT, Status.FAILED, Status.RETRYING)
"""Appeals that go again (to ``queued``) when one of their copies is re-routed."""

REROUTED = "rerouted"
"""The decision recorded on a flagged target (:class:`TargetFlag`) whose mail moved."""

_recipients = Recipient.__table__
_appeals = Appeal.__table__


# --- the addresses in force ------------------------------------------------------------


def resolve(changes: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Old address (lower-case) → the address in force, from changes in the order
    they were made; every chain followed to its end (a→b, b→c: a goes to c). A change
    that would close a loop says its new address is good again: the earlier change
    away from it ends (a→b, then b→a, undoes the first)."""
    edges: dict[str, str] = {}
    for old, new in changes:
        edges[old.lower()] = new
        if _end(edges, new) is None:
            del edges[new.lower()]
    return {old: _end(edges, old) or old for old in edges}


def _end(edges: Mapping[str, str], address: str) -> str | None:
    """Where ``address`` leads, or None if it goes round in a loop."""
    seen = set()
    while address.lower() in edges:
        if address.lower() in seen:
            return None
        seen.add(address.lower())
        address = edges[address.lower()]
    return address


def moved(campaign: str | None) -> Mapping[str, str]:
    """The changes in force for ``campaign`` (its own, and those for every campaign;
    only the latter if None): old address, lower-case → current address. A snapshot
    at most :data:`campaign.snapshots.TTL` seconds old, so a letter costs no query."""
    return snapshots.addresses(campaign)


def current(address: str, campaign: str | None = None) -> str:
    """The address mail for ``address`` goes to now, in ``campaign``."""
    return moved(campaign).get(address.lower(), address)


# --- checking a change -------------------------------------------------------------------


def check(old: str, new: str) -> tuple[str, str]:
    """Both addresses, cleaned (the new one normalised as supporters' are); raises
    :class:`InvalidInput` naming each field that is wrong and why."""
    errors: dict[str, str] = {}
    old, new = (old or "").strip(), (new or "").strip()
    for name, value in (("old", old), ("new", new)):
        if not value:
            errors[name] = _("Enter an e-mail address.")
        elif any(c in value for c in "\r\n\0"):
            errors[name] = _("An address is one line: no line breaks.")
        elif len(value) > ADDRESS_MAX:
            errors[name] = _("An address has at most %(n)s characters.", n=ADDRESS_MAX)
    if "old" not in errors and "@" not in old:
        errors["old"] = _("This is not an e-mail address.")
    if "new" not in errors:
        try:
            new = normalise_email(new, False)
        except EmailNotValidError as e:
            errors["new"] = _("This is not an e-mail address: %(why)s", why=str(e))
    if not errors and new == old.lower():
        errors["new"] = _("The new address is the same as the old one.")
    if errors:
        raise InvalidInput(errors)
    return old.lower(), new


# --- what a re-route does ------------------------------------------------------------------


@dataclass
class Plan:
    """What re-routing the mail for ``old`` to ``new`` does, worked out from the rows."""

    old: str
    new: str
    campaign: str | None
    reroute: list[int] = field(default_factory=list)  # copies (recipient ids) re-routed
    kinds: Counter[str] = field(default_factory=Counter)  # queued/held/bounced/refused
    # Copies of appeals that have one for the new address already: deleted (one copy
    # per address); if such a copy was the main addressee's, the other becomes it.
    merged: list[int] = field(default_factory=list)
    readdress: list[int] = field(default_factory=list)  # dropped copies: address only
    promoted: list[int] = field(default_factory=list)
    requeue: dict[str, list[int]] = field(default_factory=dict)  # from status → appeal ids
    release: list[int] = field(default_factory=list)  # held for the old address → queued
    noted: dict[str, list[int]] = field(default_factory=dict)  # an event only, by status
    sending: int = 0  # copies left alone: their appeal is being sent right now

    @property
    def copies(self) -> int:
        """Copies that will go to the new address: re-routed, or released from a hold
        before their first try."""
        return len(self.reroute) + self.kinds["unsent"]


def _mentions(column: object, address: str) -> object:
    escaped = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


def _chunks(ids: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), states.CHUNK):
        yield list(ids[start : start + states.CHUNK])


def plan(old: str, new: str, campaign: str | None = None, *, lock: bool = False) -> Plan:
    """Work out a re-route; with ``lock``, the appeals it touches are locked until the
    transaction ends (PostgreSQL; SQLite's writer lock is taken by the caller)."""
    p = Plan(old.lower(), new, campaign)
    r, a = _recipients, _appeals
    scope = [a.c.campaign == campaign] if campaign else []
    at_old = func.lower(r.c.address) == p.old
    query = (
        select(r.c.id, r.c.appeal_id, r.c.status, r.c.role, r.c.last_reply, a.c.status)
        .join(a, a.c.id == r.c.appeal_id)
        .where(at_old, r.c.status.in_(UNSETTLED), a.c.status.in_(ROUTABLE), *scope)
        .order_by(r.c.appeal_id, r.c.id)
    )
    if lock:
        query = query.with_for_update(of=a)
    rows = db.session.execute(query).all()
    p.sending = db.session.scalar(
        select(func.count())
        .select_from(r.join(a, a.c.id == r.c.appeal_id))
        .where(at_old, r.c.status.in_(UNSETTLED), a.c.status == Status.SENDING, *scope)
    )
    status_of = {row[1]: row[5] for row in rows}
    appeal_ids = sorted(status_of)
    taken: set[int] = set()  # appeals with a copy for the new address already
    new_rows: dict[int, int] = {}
    failed_main: set[int] = set()  # failed appeals whose main copy failed elsewhere
    failed = [i for i in appeal_ids if status_of[i] == Status.FAILED]
    for chunk in _chunks(appeal_ids):
        for row_id, appeal_id in db.session.execute(
            select(r.c.id, r.c.appeal_id).where(
                r.c.appeal_id.in_(chunk), func.lower(r.c.address) == new.lower()
            )
        ):
            taken.add(appeal_id)
            new_rows[appeal_id] = row_id
    for chunk in _chunks(failed):
        failed_main.update(
            db.session.scalars(
                select(r.c.appeal_id).where(
                    r.c.appeal_id.in_(chunk),
                    r.c.role == "to",
                    r.c.status == Delivery.FAILED,
                    func.lower(r.c.address) != p.old,
                )
            )
        )
    # Copies the relay refused, pending or bounced ones go to the new address. A copy
    # dropped when the main addressee's failed takes the new address and stays as it
    # is: it goes (there) when its appeal goes again.
    affected: set[int] = set()
    rerouted: set[int] = set()
    for row_id, appeal_id, copy_status, role, reply, appeal_status in rows:
        affected.add(appeal_id)
        if appeal_id in taken:
            p.merged.append(row_id)
            if role == "to":
                p.promoted.append(new_rows[appeal_id])
            continue
        taken.add(appeal_id)  # two spellings of the old address: the first goes
        if copy_status == Delivery.FAILED and reply == DROPPED:
            p.readdress.append(row_id)
            continue
        p.reroute.append(row_id)
        rerouted.add(appeal_id)
        p.kinds[_kind(copy_status, appeal_status)] += 1
    for appeal_id in sorted(rerouted):
        status = status_of[appeal_id]
        if status in REQUEUED and appeal_id not in failed_main:
            p.requeue.setdefault(status, []).append(appeal_id)
    held = [i for i in sorted(affected) if status_of[i] == Status.HELD]
    # A hold that names the address (a flagged target's) ends with the change.
    if held:
        for chunk in _chunks(held):
            p.release += db.session.scalars(
                select(a.c.id).where(a.c.id.in_(chunk), _mentions(a.c.status_reason, p.old))
            )
    unsent = select(a.c.id).where(
        a.c.status == Status.HELD,
        _mentions(a.c.status_reason, p.old),
        ~exists().where(r.c.appeal_id == a.c.id),
        *scope,
    )
    if lock:
        unsent = unsent.with_for_update()
    before_first_try = list(db.session.scalars(unsent))
    p.kinds["unsent"] = len(before_first_try)
    p.release = sorted({*p.release, *before_first_try})
    moving = {i for ids in p.requeue.values() for i in ids} | set(p.release)
    for appeal_id in sorted(affected - moving):
        p.noted.setdefault(status_of[appeal_id], []).append(appeal_id)
    return p


def _kind(copy_status: str, appeal_status: str) -> str:
    if copy_status == Delivery.BOUNCED:
        return "bounced"
    if copy_status == Delivery.FAILED:
        return "refused"
    return "held" if appeal_status == Status.HELD else "queued"


# --- making a change ----------------------------------------------------------------------


def change(
    old: str,
    new: str,
    *,
    campaign: str | None = None,
    actor: str,
    reroute: bool = True,
) -> int:
    """Record that ``old`` is ``new`` from now on (in ``campaign``, or in every
    campaign), and with ``reroute`` send the mail that has not reached ``old`` to
    ``new``; returns how many copies were re-routed. One transaction, committed here;
    the dispatcher is woken after it. Raises :class:`InvalidInput` for bad input."""
    old, new = check(old, new)
    if campaign is not None and campaign not in all_campaigns():
        raise InvalidInput({"campaign": _("There is no such campaign.")})
    now = utcnow()
    record = AddressChange(
        campaign=campaign, old_address=old, new_address=new, changed_at=now, changed_by=actor
    )
    db.session.add(record)
    # A write first: on SQLite it takes the writer's lock, so that no batch claims an
    # appeal between what is read below and what is written.
    db.session.flush()
    _diplomats(old, new, campaign)
    done = _reroute(plan(old, new, campaign, lock=True), actor, now) if reroute else None
    record.rerouted = done.copies if done else 0
    scope = campaign or "every campaign"
    detail = f"{old} → {new} ({scope})"
    if done:
        detail += f": {done.copies} copies re-routed"
        if done.sending:
            detail += f", {done.sending} left alone (being sent)"
    audit.record("address changed", detail, actor=actor)
    db.session.commit()
    # Another request of this process may have read the changes while this transaction
    # was open: no snapshot from before the commit is kept.
    snapshots.clear()
    if done and (done.requeue or done.release):
        from .delivery.queue import wake_dispatcher

        wake_dispatcher()
    return record.rerouted


def _diplomats(old: str, new: str, campaign: str | None) -> None:
    """A diplomat's address is its row's: the row changes (for the target state this
    campaign copies, or every one)."""
    where = [func.lower(Diplomat.email) == old]
    if campaign is not None:
        state = all_campaigns()[campaign].diplomats_of
        if not state:
            return
        where.append(Diplomat.target_state == state)
    # Through the ORM, so that the diplomats' snapshots are cleared (campaign.snapshots).
    db.session.execute(
        update(Diplomat)
        .where(*where)
        .values(email=new)
        .execution_options(synchronize_session=False)
    )


def _reroute(p: Plan, actor: str, now: datetime) -> Plan:
    r = _recipients
    reason = f"address changed: {p.old} → {p.new}, by {actor}"
    fresh = {"status": Delivery.PENDING, "attempts": 0, "next_attempt_at": None}
    for chunk in _chunks(p.reroute):
        db.session.execute(
            update(r)
            .where(r.c.id.in_(chunk))
            .values(
                address=p.new,
                last_reply=f"address changed from {p.old}",
                accepted_at=None,
                bounced_at=None,
                digest_id=None,
                **fresh,
            )
        )
    for chunk in _chunks(p.readdress):
        db.session.execute(update(r).where(r.c.id.in_(chunk)).values(address=p.new))
    # Gone rather than marked failed: a manager's retry gives failed copies a fresh
    # start, and this one must never go to the old address again.
    for chunk in _chunks(p.merged):
        db.session.execute(delete(r).where(r.c.id.in_(chunk)))
    for chunk in _chunks(p.promoted):
        db.session.execute(update(r).where(r.c.id.in_(chunk)).values(role="to"))
    again = {"next_attempt_at": None, "attempts": 0, "job_id": None}
    for source, ids in p.requeue.items():
        moved = [
            row[0] for row in states.move(ids, source, Status.QUEUED, reason=reason, values=again)
        ]
        if source == Status.FAILED:
            # The copies dropped with the main addressee's go again with it.
            for chunk in _chunks(moved):
                db.session.execute(
                    update(r)
                    .where(
                        r.c.appeal_id.in_(chunk),
                        r.c.status == Delivery.FAILED,
                        r.c.last_reply == DROPPED,
                    )
                    .values(**fresh)
                )
    if p.release:
        states.move(p.release, Status.HELD, Status.QUEUED, reason=reason, values=again)
    for status, ids in p.noted.items():
        states.noted(ids, status, reason)
    flags = TargetFlag.__table__
    db.session.execute(
        update(flags)
        .where(func.lower(flags.c.address) == p.old)
        .values(decision=REROUTED, decided_at=now, decided_by=actor)
    )
    return p


# --- the admin page's lists -----------------------------------------------------------------


@dataclass
class InUse:
    """An address mail is written to, who it is, and its copies not yet settled."""

    address: str
    current: str
    who: list[str] = field(default_factory=list)
    campaigns: set[str] = field(default_factory=set)
    queued: int = 0
    held: int = 0
    bounced: int = 0
    refused: int = 0
    sending: int = 0

    @property
    def changed(self) -> bool:
        return self.current.lower() != self.address.lower()


def copy_counts() -> dict[str, dict[str, int]]:
    """Per address (lower-case): the copies queued, held, bounced, refused and being
    sent; one grouped query over the copies not yet settled."""
    r, a = _recipients, _appeals
    pending = r.c.status == Delivery.PENDING

    def count(*conditions: object) -> object:
        return func.sum(case((and_(*conditions), 1), else_=0))

    rows = db.session.execute(
        select(
            func.lower(r.c.address),
            count(pending, a.c.status.in_((Status.QUEUED, Status.RETRYING))),
            count(pending, a.c.status == Status.HELD),
            count(r.c.status == Delivery.BOUNCED, a.c.status.in_(ROUTABLE)),
            count(
                r.c.status == Delivery.FAILED,
                or_(r.c.last_reply.is_(None), r.c.last_reply != DROPPED),
                a.c.status.in_(ROUTABLE),
            ),
            count(a.c.status == Status.SENDING),
        )
        .join(a, a.c.id == r.c.appeal_id)
        .where(r.c.status.in_(UNSETTLED))
        .group_by(func.lower(r.c.address))
    ).all()
    keys = ("queued", "held", "bounced", "refused", "sending")
    return {row[0]: dict(zip(keys, (int(n or 0) for n in row[1:]), strict=True)) for row in rows}


def in_use() -> list[InUse]:
    """Every address mail is written to: the campaign files' addressees (with the
    address in force), the diplomats on file, and any address with copies not yet
    settled, each with its counts."""
    found: dict[str, InUse] = {}

    def entry(address: str, now: str) -> InUse:
        key = address.lower()
        if key not in found:
            found[key] = InUse(address, now)
        return found[key]

    for slug, c in sorted(all_campaigns().items()):
        for addressee in c.addressees:
            if addressee.email:
                item = entry(addressee.email, current(addressee.email, slug))
                item.who.append(f"{addressee.name} ({addressee.role}, {slug})")
                item.campaigns.add(slug)
    for d in db.session.scalars(
        db.select(Diplomat).where(Diplomat.email.is_not(None)).order_by(Diplomat.email)
    ):
        item = entry(d.email or "", d.email or "")
        item.who.append(f"{d.name} ({d.target_state} in {d.country})")
    for address, counts in copy_counts().items():
        item = entry(address, address)
        for key, n in counts.items():
            setattr(item, key, n)
    return sorted(found.values(), key=lambda i: i.address.lower())


def history(limit: int = 200) -> list[AddressChange]:
    return list(
        db.session.scalars(db.select(AddressChange).order_by(AddressChange.id.desc()).limit(limit))
    )
