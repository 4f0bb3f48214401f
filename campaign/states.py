"""The appeal's states: one table of the moves allowed, and one function that makes them.

Every change of ``appeals.status`` goes through :func:`move`: confirming, claiming a
batch, recording its outcomes, pacing, recovery after a lost worker, steering and
synthetic load. A move is a guarded bulk UPDATE: it changes only the rows that are
still in the state the caller expects (and match any further condition it gives),
records one event for each row it really moved, and returns exactly those rows.
So two writers racing for the same appeal cannot both win, and the event log
never shows a move that did not happen (the shape of django-fsm's guarded save).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, String, Text, insert, literal, select, update

from .db import UTCDateTime, db, utcnow
from .models import Appeal, AppealEvent, Status

#: state → the states it may move to. Nothing else is ever written to ``appeals.status``.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.AWAITING_CONFIRMATION: frozenset(
        {
            Status.QUEUED,  # the supporter confirmed (or the campaign needs no confirmation)
            Status.FAILED,  # the confirmation mail cannot be delivered
            Status.CANCELLED,  # a manager cancelled it
        }
    ),
    Status.QUEUED: frozenset(
        {
            Status.SENDING,  # a batch claimed it
            Status.HELD,
            Status.CANCELLED,
        }
    ),
    Status.SENDING: frozenset(
        {
            Status.SENT,  # every copy settled, the main addressee's accepted
            Status.RETRYING,  # a transient error for a copy still pending
            Status.FAILED,  # the main addressee's copy failed for good
            Status.QUEUED,  # paced, or its worker stopped before sending
        }
    ),
    Status.RETRYING: frozenset(
        {
            Status.SENDING,  # a batch claimed it when its time came
            Status.QUEUED,  # a manager's "retry now"
            Status.HELD,
            Status.CANCELLED,
        }
    ),
    Status.HELD: frozenset({Status.QUEUED, Status.CANCELLED}),
    Status.FAILED: frozenset({Status.QUEUED}),  # a manager's retry
    Status.SENT: frozenset(),
    Status.CANCELLED: frozenset(),
}

CHUNK = 5000
"""Ids per statement: SQLite allows 32,766 bound values, and lists stay cheap to plan."""

_appeals = Appeal.__table__


class IllegalMove(ValueError):
    """A move that the transition table does not allow: a programming error."""


def allowed(source: str, target: str) -> bool:
    return target in TRANSITIONS.get(source, frozenset())


def move(
    ids: Collection[int] | None,
    source: str | Iterable[str],
    target: str,
    *,
    reason: str | None = None,
    values: Mapping[str, Any] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    returning: Sequence[Any] = (),
    at: datetime | None = None,
) -> list[Row[Any]]:
    """Move the appeals ``ids`` (every appeal, if None) that are in ``source`` to ``target``.

    ``values`` are written with the move (``status_reason`` defaults to ``reason``);
    ``where`` adds conditions, such as the job that must hold the row. Returns a row
    ``(id, *returning)`` for each appeal moved, and records an event for each of them
    and for no other. The caller commits.
    """
    sources = (source,) if isinstance(source, str) else tuple(source)
    for s in sources:
        if not allowed(s, target):
            raise IllegalMove(f"{s} → {target}")
    at = at or utcnow()
    assignments = {"status_reason": reason, **(values or {}), "status": target, "updated_at": at}
    moved: list[Row[Any]] = []
    id_chunks: list[list[int] | None] = (
        [None] if ids is None else [list(ids)[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]
    )
    for from_status in sources:
        for chunk in id_chunks:
            if chunk == []:
                continue
            statement = (
                update(_appeals)
                .where(_appeals.c.status == from_status, *where)
                .values(assignments)
                .returning(_appeals.c.id, *returning)
            )
            if chunk is not None:
                statement = statement.where(_appeals.c.id.in_(chunk))
            rows = db.session.execute(statement).all()
            _record([r[0] for r in rows], from_status, target, reason, at)
            moved += rows
    return moved


def created(ids: Iterable[int], status: str, reason: str | None = None) -> None:
    """Record the first event of new appeals: they came into being in ``status``."""
    _record(list(ids), None, status, reason, utcnow())


def noted(ids: Iterable[int], status: str, reason: str) -> None:
    """Record something that happened to appeals without moving them (a resubmission)."""
    _record(list(ids), status, status, reason, utcnow())


def _record(
    ids: list[int], from_status: str | None, to_status: str, reason: str | None, at: datetime
) -> None:
    """One event row per appeal, in one INSERT … SELECT (a fifth of the cost of a
    row of VALUES each, on PostgreSQL)."""
    if not ids:
        return
    db.session.execute(
        insert(AppealEvent).from_select(
            ["appeal_id", "from_status", "to_status", "reason", "at"],
            select(
                _appeals.c.id,
                literal(from_status, String),
                literal(to_status, String),
                literal(reason, Text),
                literal(at, UTCDateTime),
            ).where(_appeals.c.id.in_(ids)),
        )
    )
