"""The batch runner: one job's appeals, sent over one relay session, every outcome recorded.

The path reads in one direction::

    claim (Batch) → compose (letters, MIME) → plan (pacing, per copy)
        → transmit (transport) → verdicts (policy) → outcome (recipients) → record (Batch)

:func:`deliver` takes its store (a :class:`Batch`: the database and the acceptance
journal), its transport, its composer and its pacer as arguments; the RQ job in
:mod:`.jobs` builds them from the application.

Retries, leases and heartbeats are the database's, not RQ's, on purpose: a retry
goes to some recipients of an appeal and not others, at a time each recipient
decides, and an appeal must survive Redis losing its job; RQ's retry re-runs a
whole job and lives in Redis. Running a job twice never sends an appeal twice:
a batch sends only the appeals it moved from ``queued``/``retrying`` to
``sending`` itself.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import bindparam, text, update

from .. import states
from ..campaigns import get_campaign
from ..db import UTCDateTime, db, utcnow
from ..letters import diplomats_of
from ..mail import Outgoing, appeal_message
from ..models import IN_FLIGHT, Appeal, Delivery, Diplomat, Status
from ..settings import RelaySettings
from . import recipients
from .journal import Journal
from .pacing import Pacer
from .policy import RELAY_DOWN_AFTER, Verdict, backoff, verdicts
from .recipients import Copy, Outcome, Result
from .transport import Envelope, RelayConnection, SessionLost, Transmission

CLAIMED = tuple(c.name for c in Appeal.__table__.c if c.name != "id")
"""Every column of a claimed appeal, read in the claim itself."""

_HEARTBEAT = (
    update(Appeal.__table__)
    .where(text(IN_FLIGHT), Appeal.__table__.c.job_id == bindparam("job"))
    .values(updated_at=bindparam("now", type_=UTCDateTime))
)
"""The appeals this job still holds are not abandoned (the recovery's lease)."""

COMMIT_EVERY = 200
"""Outcomes recorded per database write (the journal covers the gap)."""

COMMIT_SECONDS = 2.0
"""…or this many seconds, whichever comes first; also the batch's heartbeat."""

K = TypeVar("K")


@dataclass(eq=False)
class Attempt:
    """One claimed appeal in this batch."""

    appeal: Any  # the appeal's row, as claimed
    copies: list[Copy] | None  # None: never tried, the letter decides
    message: Outgoing | None = None
    transmitted: bool = False


Composer = Callable[[Any, list[Copy] | None], tuple[Outgoing, list[Copy]]]
"""(appeal row, stored copies or None) → (the whole message, every copy)."""


@dataclass
class Batch:
    """The store: claims one job's appeals and records their outcomes in bulk, each
    acceptance noted in the journal the moment the relay gives it."""

    job_id: str
    journal: Journal
    results: list[Result] = field(default_factory=list)
    journaled: list[int] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    counts: dict[str, int] = field(default_factory=dict)

    def claim(self, appeal_ids: list[int]) -> list[Attempt]:
        rows = states.move(
            appeal_ids,
            (Status.QUEUED, Status.RETRYING),
            Status.SENDING,
            reason=None,
            values={"attempts": states.Plus(1), "job_id": self.job_id},
            returning=CLAIMED,
        )
        db.session.commit()
        rows.sort(key=lambda r: r[0])
        stored = recipients.load(r[0] for r in rows)
        return [Attempt(r, stored.get(r.id)) for r in rows]

    def add(self, attempt: Attempt, outcome: Outcome, *, counted: bool = True) -> None:
        appeal_id = attempt.appeal.id
        copies = attempt.copies if attempt.transmitted else None
        self.results.append(Result(appeal_id, outcome, copies, counted))
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1

    def accepted(self, attempt: Attempt) -> None:
        """The relay took the message: note it before anything else happens."""
        assert attempt.copies is not None
        self.journal.note(attempt.appeal.id, recipients.to_note(attempt.copies))
        self.journaled.append(attempt.appeal.id)

    def due(self) -> bool:
        return (
            len(self.results) >= COMMIT_EVERY
            or time.monotonic() - self.last_flush >= COMMIT_SECONDS
        )

    def flush(self) -> None:
        self.journal.settle()  # every note is in Redis before the rows it covers
        moved = recipients.record(self.results, match={"job_id": self.job_id})
        # Heartbeat: the appeals this job still holds are not abandoned.
        db.session.connection().execute(_HEARTBEAT, {"job": self.job_id, "now": utcnow()})
        db.session.commit()
        # Only the notes of what this job recorded: an appeal that someone else took
        # over keeps its note, and whoever holds it now reads it.
        held = set(moved)
        self.journal.clear([i for i in self.journaled if i in held])
        self.results, self.journaled = [], []
        self.last_flush = time.monotonic()


class AppealComposer:
    """Letters for a batch: the message, and each recipient's copy on the first try.

    Looks up each campaign's diplomats once per batch.
    """

    def __init__(self, relay: RelaySettings) -> None:
        self.relay = relay
        self._diplomats: dict[str, dict[str, list[Diplomat]]] = {}

    def __call__(self, appeal: Any, copies: list[Any] | None) -> tuple[Outgoing, list[Any]]:
        if appeal.campaign not in self._diplomats:
            self._diplomats[appeal.campaign] = diplomats_of(get_campaign(appeal.campaign))
        diplomats = self._diplomats[appeal.campaign].get(appeal.country, [])
        if copies:
            addressees = (
                [(c.name, c.address) for c in copies if c.role == "to"],
                [(c.name, c.address) for c in copies if c.role == "cc"],
            )
            message = appeal_message(
                appeal,
                self.relay,
                diplomats=diplomats,
                message_id=copies[0].message_id,
                addressees=addressees,
            )
            return message, copies
        message = appeal_message(appeal, self.relay, diplomats=diplomats)
        copies = [Copy(a, n, "to", message_id=message.message_id) for n, a in message.to]
        copies += [Copy(a, n, "cc", message_id=message.message_id) for n, a in message.cc]
        return message, copies


def deliver(
    appeal_ids: list[int],
    *,
    store: Batch,
    transport: RelayConnection,
    compose: Composer,
    pacer: Pacer,
    timezone_of: Callable[[str], str],
) -> dict[str, int]:
    """Send a batch of appeals over one relay session and record each outcome."""
    attempts = store.claim(appeal_ids)
    if not attempts:
        return {"claimed": 0}
    try:
        ready = _prepare(attempts, store, compose, pacer, timezone_of)
        for attempt, result in transmit(transport, ready):
            now = utcnow()
            if isinstance(result, SessionLost):
                store.add(attempt, _unavailable(attempt, result, now), counted=False)
            else:
                _settle(attempt, result, now, store)
            if store.due():
                store.flush()
    finally:
        transport.close()
        try:
            store.flush()
        finally:
            store.journal.close()
    return {"claimed": len(attempts), **store.counts}


def _prepare(
    attempts: list[Attempt],
    store: Batch,
    compose: Composer,
    pacer: Pacer,
    timezone_of: Callable[[str], str],
) -> deque[tuple[Attempt, Envelope]]:
    """Compose every appeal of the batch and choose the copies that go now."""
    ready: deque[tuple[Attempt, Envelope]] = deque()
    positions: dict[str, int] = {}
    now = utcnow()
    for attempt in attempts:
        appeal = attempt.appeal
        try:
            attempt.message, attempt.copies = compose(appeal, attempt.copies)
        except Exception as exc:  # noqa: BLE001 - one bad letter must not stop the batch
            current_app.logger.exception("appeal %s: the letter could not be rendered", appeal.id)
            store.add(attempt, Outcome(Status.FAILED, f"the letter could not be rendered: {exc!r}"))
            continue
        envelope = _plan(attempt.copies, pacer, timezone_of(appeal.campaign), now, positions)
        if envelope:
            ready.append((attempt, replace(attempt.message, recipients=envelope)))
        else:  # every copy waits for its turn: not a try
            store.add(attempt, recipients.outcome(attempt.copies), counted=False)
    return ready


def _plan(
    copies: list[Copy], pacer: Pacer, timezone: str, now: datetime, positions: dict[str, int]
) -> list[str]:
    """The addresses this try goes to: the pending copies that are due (all pending
    ones if a manager asked for a retry before any was) and have a pacing token.
    The others wait, spread over the coming slots instead of all waking for one."""
    pending = [c for c in copies if c.status == Delivery.PENDING]
    due = [c for c in pending if c.due(now)] or pending
    waits = pacer.waits([c.address for c in due], timezone, now)
    envelope = []
    for copy in due:
        wait = waits[copy.address]
        if not wait:
            envelope.append(copy.address)
            continue
        bucket, rate = pacer.tightest(copy.address)
        position = positions.get(bucket, 0)
        positions[bucket] = position + 1
        copy.wait_until(now + timedelta(seconds=wait + position / rate))
    return envelope


def _settle(attempt: Attempt, transmission: Transmission, now: datetime, store: Batch) -> None:
    assert attempt.copies is not None
    attempt.transmitted = True
    by_address = {c.address: c for c in attempt.copies}
    accepted = False
    for address, (verdict, reply) in verdicts(transmission).items():
        by_address[address].settle(verdict, reply, now)
        accepted = accepted or verdict is Verdict.ACCEPTED
    outcome = recipients.outcome(attempt.copies)
    if accepted:
        store.accepted(attempt)
    store.add(attempt, outcome)


def _unavailable(attempt: Attempt, lost: SessionLost, now: datetime) -> Outcome:
    """The relay is down for now: the appeal waits without losing a try."""
    return Outcome(
        Status.RETRYING,
        f"relay unavailable: {lost.reason}",
        now + backoff(attempt.appeal.attempts),
    )


def transmit(
    transport: RelayConnection, ready: deque[tuple[K, Envelope]]
) -> Iterator[tuple[K, Transmission | SessionLost]]:
    """Send every message in ``ready``, opening a new session after a lost one.

    Yields the relay's :class:`Transmission` for each message that reached it. When
    :data:`~.policy.RELAY_DOWN_AFTER` sessions in a row got nothing through (the relay
    is down, refuses our log-in or our TLS), yields the last :class:`SessionLost` for
    each message left, and stops.
    """
    messages = dict(ready)
    sessions_without_progress = 0
    while ready:
        progress, lost, last = False, [], SessionLost("no session")
        for key, result in transport.send_stream(_drain(ready)):
            if isinstance(result, SessionLost):
                lost.append((key, messages[key]))
                last = result
            else:
                progress = True
                yield key, result
        ready.extendleft(reversed(lost))
        sessions_without_progress = 0 if progress else sessions_without_progress + 1
        if sessions_without_progress >= RELAY_DOWN_AFTER:
            while ready:
                yield ready.popleft()[0], last


def _drain(ready: deque[tuple[K, Envelope]]) -> Iterator[tuple[K, Envelope]]:
    while ready:
        yield ready.popleft()
