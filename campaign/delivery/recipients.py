"""Each recipient's own delivery state; an appeal is sent when every copy is settled.

An appeal goes To its main addressee and Cc every copy addressee with an e-mail
address. Each of them is a :class:`Copy` with its own state, tries and last reply,
stored as a row of ``appeal_recipients`` (Postfix's queue keeps the same per
recipient). A retry goes only to the copies still pending, with the same headers
and Message-ID, and a copy once accepted never goes again.

The appeal's own state follows from its copies (:func:`outcome`):

* ``sent`` when the main addressee's copy is accepted and every other is settled;
  a copy refused for good shows as a note in the reason;
* ``failed`` when the main addressee's copy failed for good;
* else it waits for its pending copies: ``retrying`` if one of them was refused for
  now, ``queued`` if they only wait for their turn (pacing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, insert, update

from .. import states
from ..db import db, utcnow
from ..models import Delivery, Recipient, Status
from .policy import MAX_ATTEMPTS, Verdict, backoff
from .transport import Reply

_recipients = Recipient.__table__


@dataclass
class Copy:
    """One recipient's copy of an appeal, as the batch sees and changes it."""

    address: str
    name: str
    role: str
    status: str = Delivery.PENDING
    attempts: int = 0
    last_reply: str | None = None
    next_attempt_at: datetime | None = None
    accepted_at: datetime | None = None
    message_id: str | None = None
    id: int | None = None
    changed: bool = False

    def due(self, now: datetime) -> bool:
        return self.status == Delivery.PENDING and (
            self.next_attempt_at is None or self.next_attempt_at <= now
        )

    def settle(self, verdict: Verdict, reply: Reply, now: datetime) -> None:
        """Record the relay's verdict on one try of this copy."""
        self.attempts += 1
        self.last_reply = str(reply)
        self.changed = True
        if verdict is Verdict.ACCEPTED:
            self.status, self.accepted_at, self.next_attempt_at = Delivery.ACCEPTED, now, None
        elif verdict is Verdict.PERMANENT or self.attempts >= MAX_ATTEMPTS:
            self.status, self.next_attempt_at = Delivery.FAILED, None
        else:
            self.next_attempt_at = now + backoff(self.attempts)

    def wait_until(self, moment: datetime) -> None:
        """Pacing: this copy's turn comes at ``moment``; not a try."""
        self.next_attempt_at = moment
        self.changed = True


STORED = (
    "address",
    "name",
    "role",
    "status",
    "attempts",
    "last_reply",
    "next_attempt_at",
    "accepted_at",
    "message_id",
)
"""What a copy's row holds, besides its id: the fields of :class:`Copy` that are stored."""


@dataclass(frozen=True)
class Outcome:
    """Where an appeal goes after a try, with the reason and when to try again."""

    status: str
    reason: str | None = None
    next_attempt_at: datetime | None = None


def outcome(copies: list[Copy]) -> Outcome:
    """The appeal's state, from its copies'. Drops pending copies of a failed appeal."""
    main = next(c for c in copies if c.role == "to")
    if main.status == Delivery.FAILED:
        for copy in copies:
            if copy.status == Delivery.PENDING:
                copy.status, copy.changed = Delivery.FAILED, True
                copy.last_reply = "not sent: the main addressee's copy failed"
        return Outcome(Status.FAILED, f"{main.address}: {main.last_reply}")
    pending = [c for c in copies if c.status == Delivery.PENDING]
    if not pending:
        refused = [
            f"copy to {c.address} refused: {c.last_reply}"
            for c in copies
            if c.status == Delivery.FAILED
        ]
        return Outcome(Status.SENT, "; ".join(refused) or None)
    tried = [c for c in pending if c.attempts]
    times = [c.next_attempt_at for c in pending if c.next_attempt_at]
    next_at = min(times) if times else None
    if tried:
        reason = "; ".join(f"{c.address}: {c.last_reply}" for c in tried)
        return Outcome(Status.RETRYING, reason, next_at)
    return Outcome(Status.QUEUED, "paced: waiting for its turn", next_at)


@dataclass
class Result:
    """One appeal's try, ready to be recorded: where it goes, and its copies to store
    (None when nothing reached the relay, so nothing about the copies changed)."""

    appeal_id: int
    outcome: Outcome
    copies: list[Copy] | None = None
    counted: bool = True  # False: not a try (paced, relay down); the claim is given back


def record(results: Iterable[Result], **guard: Any) -> list[int]:
    """Move each appeal from ``sending`` to its outcome and store its copies, for the
    appeals that ``guard`` (see :func:`campaign.states.move`) says the caller still
    holds; returns the ids moved. Appeals with the same outcome move in one
    statement. The caller commits."""
    groups: dict[tuple[Any, ...], list[Result]] = {}
    for result in results:
        o = result.outcome
        groups.setdefault((o.status, o.reason, o.next_attempt_at, result.counted), []).append(
            result
        )
    now = utcnow()
    moved: set[int] = set()
    for (status, reason, next_at, counted), group in groups.items():
        values: dict[str, Any] = {"next_attempt_at": next_at}
        if status == Status.SENT:
            values["sent_at"] = now
        if status in (Status.QUEUED, Status.RETRYING):
            values["job_id"] = None  # due again later, for whichever job the dispatcher picks
        if not counted:
            values["attempts"] = states.Plus(-1)
        rows = states.move(
            [r.appeal_id for r in group],
            Status.SENDING,
            status,
            reason=reason,
            values=values,
            at=now,
            **guard,
        )
        moved.update(row[0] for row in rows)
    store({r.appeal_id: r.copies for r in results if r.copies and r.appeal_id in moved})
    return sorted(moved)


def merge(stored: list[Copy], noted: list[Copy]) -> list[Copy]:
    """The copies of an appeal from the database and from a journal note, one per
    address; what the relay settled (accepted, then refused) wins over pending."""
    rank = {Delivery.ACCEPTED: 2, Delivery.FAILED: 1, Delivery.PENDING: 0}
    by_address = {c.address: c for c in stored}
    for note in noted:
        known = by_address.get(note.address)
        if known is None:
            by_address[note.address] = note
        elif rank[note.status] > rank[known.status] or (
            note.status == known.status and note.attempts > known.attempts
        ):
            note.id = known.id
            by_address[note.address] = note
    return list(by_address.values())


def load(appeal_ids: Iterable[int]) -> dict[int, list[Copy]]:
    """The stored copies of these appeals (none yet for an appeal never tried)."""
    ids = list(appeal_ids)
    found: dict[int, list[Copy]] = {}
    if not ids:
        return found
    rows = db.session.execute(
        db.select(_recipients).where(_recipients.c.appeal_id.in_(ids)).order_by(_recipients.c.id)
    ).all()
    for row in rows:
        found.setdefault(row.appeal_id, []).append(
            Copy(**{f: getattr(row, f) for f in STORED}, id=row.id)
        )
    return found


_UPDATE = (
    update(_recipients)
    .where(_recipients.c.id == bindparam("_id"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        last_reply=bindparam("last_reply"),
        next_attempt_at=bindparam("next_attempt_at"),
        accepted_at=bindparam("accepted_at"),
    )
)


def store(copies_by_appeal: dict[int, list[Copy]]) -> None:
    """Write the copies that changed: new ones inserted, known ones updated. The
    caller has made sure it still holds these appeals, and commits."""
    new: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for appeal_id, copies in copies_by_appeal.items():
        for c in copies:
            if c.id is None:
                new.append(_row(appeal_id, c))
            elif c.changed:
                known.append(
                    {
                        "_id": c.id,
                        "status": c.status,
                        "attempts": c.attempts,
                        "last_reply": c.last_reply,
                        "next_attempt_at": c.next_attempt_at,
                        "accepted_at": c.accepted_at,
                    }
                )
    if new:
        db.session.execute(insert(_recipients), new)
    if known:
        db.session.execute(_UPDATE, known)


def _row(appeal_id: int, c: Copy) -> dict[str, Any]:
    return {"appeal_id": appeal_id, **{f: getattr(c, f) for f in STORED}}


# --- the acceptance journal's notes ------------------------------------------------------


_TIMES = frozenset({"next_attempt_at", "accepted_at"})


def to_note(copies: list[Copy]) -> str:
    """The copies as the database should hold them, for the acceptance journal."""
    return json.dumps(
        [[_plain(f, getattr(c, f)) for f in STORED] + [c.id] for c in copies],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _plain(field: str, value: Any) -> Any:
    return value.timestamp() if field in _TIMES and value is not None else value


def from_note(note: str | bytes) -> list[Copy]:
    copies = []
    for item in json.loads(note):
        values = {
            f: datetime.fromtimestamp(v, UTC) if f in _TIMES and v is not None else v
            for f, v in zip(STORED, item, strict=False)
        }
        copies.append(Copy(**values, id=item[len(STORED)], changed=True))
    return copies
