"""The batch runner: one job's appeals, sent over one relay session, every outcome recorded.

The path reads in one direction::

    claim (Batch) → compose (letters, MIME) → plan (pacing, per copy)
        → transmit (transport) → verdicts (policy) → outcome (recipients) → record (Batch)

:func:`deliver` takes its store (a :class:`Batch`: the database and the acceptance
journal), its transport, its composer and its pacer as arguments; the RQ job in
:mod:`.jobs` builds them from the application. The pauses and test modes of
:mod:`campaign.sending` are read once per batch (and every ``COMMIT_SECONDS`` while
it sends), never per appeal.

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

from .. import bounces, sending, states
from ..campaigns import get_campaign
from ..db import UTCDateTime, db, utcnow
from ..letters import diplomats_of
from ..mail import TEST_MARK, Outgoing, appeal_message, sender_domain, staff_copy
from ..models import IN_FLIGHT, Appeal, Delivery, Diplomat, Status
from ..settings import RelaySettings
from . import recipients
from .journal import Journal
from .pacing import Pacer
from .policy import RELAY_DOWN_AFTER, Verdict, backoff, verdicts
from .recipients import Copy, Outcome, Result
from .transport import Envelope, RelayConnection, Reply, SessionLost, Transmission

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
    test_to: str | None = None  # test mode: the staff address it goes to instead
    test_for: list[str] = field(default_factory=list)  # …of these addressees


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

    Looks up each campaign's diplomats once per batch. With ``BOUNCE_ADDRESS`` set, the
    envelope sender is the appeal's own bounce address (:mod:`campaign.bounces`).
    """

    def __init__(self, relay: RelaySettings) -> None:
        self.relay = relay
        self._diplomats: dict[str, dict[str, list[Diplomat]]] = {}
        self.bounce_address = current_app.config.get("BOUNCE_ADDRESS") or None

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
            return self._returned_to(appeal, message), copies
        message = self._returned_to(appeal, appeal_message(appeal, self.relay, diplomats=diplomats))
        copies = [Copy(a, n, "to", message_id=message.message_id) for n, a in message.to]
        copies += [Copy(a, n, "cc", message_id=message.message_id) for n, a in message.cc]
        return message, copies

    def _returned_to(self, appeal: Any, message: Outgoing) -> Outgoing:
        if not self.bounce_address:
            return message
        sender = bounces.envelope_sender(appeal.id, self.bounce_address, sender_domain(self.relay))
        return replace(message, envelope_from=sender)


PAUSED = Outcome(Status.QUEUED, "sending paused: waits in the queue")
"""An appeal of a paused campaign, given back unsent; not a try (:mod:`campaign.sending`)."""


def deliver(
    appeal_ids: list[int],
    *,
    store: Batch,
    transport: RelayConnection,
    compose: Composer,
    pacer: Pacer,
    timezone_of: Callable[[str], str],
    gate: Callable[[], sending.Gate] = sending.read,
) -> dict[str, int]:
    """Send a batch of appeals over one relay session and record each outcome.

    ``gate`` tells the pauses and test modes in force: read before the claim, and again
    at a write every ``COMMIT_SECONDS`` while sending, so that a pause gives back what
    has not gone yet within seconds."""
    switches = gate()
    if switches.everything_paused:
        return {"claimed": 0}
    attempts = store.claim(appeal_ids)
    if not attempts:
        return {"claimed": 0}
    try:
        ready = _prepare(attempts, store, compose, pacer, timezone_of, switches)
        looked = time.monotonic()
        for attempt, result in transmit(transport, ready):
            now = utcnow()
            if isinstance(result, SessionLost):
                store.add(attempt, _unavailable(attempt, result, now), counted=False)
            else:
                _settle(attempt, result, now, store)
            if store.due():
                store.flush()
                if time.monotonic() - looked >= COMMIT_SECONDS:
                    looked = time.monotonic()
                    _give_back_paused(ready, store, gate())
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
    switches: sending.Gate,
) -> deque[tuple[Attempt, Envelope]]:
    """Compose every appeal of the batch and choose the copies that go now."""
    ready: deque[tuple[Attempt, Envelope]] = deque()
    positions: dict[str, int] = {}
    now = utcnow()
    for attempt in attempts:
        appeal = attempt.appeal
        if switches.holds(appeal.campaign):
            store.add(attempt, PAUSED, counted=False)
            continue
        try:
            attempt.message, attempt.copies = compose(appeal, attempt.copies)
        except Exception as exc:  # noqa: BLE001 - one bad letter must not stop the batch
            current_app.logger.exception("appeal %s: the letter could not be rendered", appeal.id)
            store.add(attempt, Outcome(Status.FAILED, f"the letter could not be rendered: {exc!r}"))
            continue
        test_to = switches.test_address(appeal.campaign)
        if test_to:
            # Test mode: every copy still pending goes at once, in one message to the staff
            # address alone. No target is written to, so no target's pacing is spent.
            attempt.test_to = test_to
            attempt.test_for = [c.address for c in attempt.copies if c.status == Delivery.PENDING]
            ready.append((attempt, staff_copy(attempt.message, test_to, attempt.test_for)))
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
    replies = verdicts(transmission)
    if attempt.test_to:
        replies = _in_test(attempt, replies)
    for address, (verdict, reply) in replies.items():
        by_address[address].settle(verdict, reply, now)
        accepted = accepted or verdict is Verdict.ACCEPTED
    outcome = recipients.outcome(attempt.copies)
    if attempt.test_to and outcome.reason is None:
        reason = f"{TEST_MARK}sent to {attempt.test_to} instead of its addressees"
        outcome = replace(outcome, reason=reason)
    if accepted:
        store.accepted(attempt)
    store.add(attempt, outcome)


def _in_test(
    attempt: Attempt, replies: dict[str, tuple[Verdict, Reply]]
) -> dict[str, tuple[Verdict, Reply]]:
    """Test mode: the relay's word on the staff address's copy stands for each
    addressee's copy it replaced, marked as a test in the reply kept for each."""
    if not replies:
        return {}
    verdict, reply = next(iter(replies.values()))
    marked = Reply(reply.code, f"{TEST_MARK}sent to {attempt.test_to} instead: {reply.text}")
    return {address: (verdict, marked) for address in attempt.test_for}


def _give_back_paused(
    ready: deque[tuple[Attempt, Envelope]], store: Batch, switches: sending.Gate
) -> None:
    """A pause came while this batch was sending: what has not gone yet goes back to the
    queue, not counted as a try. The message already on the wire finishes."""
    if not switches.any_pause:
        return
    keep = [item for item in ready if not switches.holds(item[0].appeal.campaign)]
    for attempt, _ in ready:
        if switches.holds(attempt.appeal.campaign):
            store.add(attempt, PAUSED, counted=False)
    ready.clear()
    ready.extend(keep)


def _unavailable(attempt: Attempt, lost: SessionLost, now: datetime) -> Outcome:
    """The relay is down for now: the appeal waits without losing a try. The time is
    kept to the second, so that a batch's appeals left waiting move in one statement
    per attempt count, not one each."""
    return Outcome(
        Status.RETRYING,
        f"relay unavailable: {lost.reason}",
        (now + backoff(attempt.appeal.attempts)).replace(microsecond=0),
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
