"""Mail to supporters, in batches over one relay session. Never paced, always limited.

Two kinds: the confirmation link of an appeal awaiting confirmation, and a notice to
an address that was submitted again after its appeal was confirmed. An address gets
at most ``CONFIRMATION_MAILS_PER_DAY`` (1) of them a day, however many times it is
submitted, through the form or the API: the form can't be used to flood someone.
A confirmation over the limit waits for the next day; a notice is dropped (the
address had its mail today).

The link's token is derived from the appeal (see
:func:`~campaign.tokens.confirmation_token`), so a confirmation sent twice carries
the same link and the first one still works. A batch claims its appeals by stamping
``confirmation_sent_at`` (or clearing ``notice_requested_at``); a transient failure
takes the stamp back and sets the time of the next try.

Each mail speaks the supporter's interface language (``appeals.locale``), whatever
the letter's: a German supporter of a Spanish letter reads German.
"""

from __future__ import annotations

import hashlib
from collections import deque
from datetime import timedelta
from typing import Any

from flask import current_app
from flask_babel import force_locale
from redis import Redis
from sqlalchemy import update

from .. import states
from ..db import db, utcnow
from ..i18n import DEFAULT as DEFAULT_LANGUAGE
from ..i18n import supported
from ..mail import Outgoing, confirmation_message, notice_message
from ..models import Appeal, Status
from ..settings import RelaySettings
from ..tokens import confirmation_token, token_hash
from .policy import MAX_ATTEMPTS, Verdict, backoff, verdicts
from .runner import transmit
from .transport import RelayConnection, SessionLost

_appeals = Appeal.__table__
DAY = 24 * 3600


class DailyLimit:
    """Mails per address and day, counted in Redis (shared by every worker)."""

    def __init__(self, redis: Redis, per_day: int) -> None:
        self.redis = redis
        self.per_day = per_day

    @staticmethod
    def _key(address: str) -> str:
        return "supporter-mail:" + hashlib.sha256(address.lower().encode()).hexdigest()

    def take_all(self, addresses: list[str]) -> list[bool]:
        """One mail for each address (in order), where it had fewer than its share
        today: two round trips for a whole batch, where one an address cost a third of
        a confirmation mail's CPU in the workers (py-spy, under a spike). An address
        twice in the list counts twice."""
        if not addresses:
            return []
        keys = [self._key(a) for a in addresses]
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, 0, ex=DAY, nx=True).incr(key)
            counts = pipe.execute()[1::2]
        over = [key for key, count in zip(keys, counts, strict=True) if count > self.per_day]
        if over:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in over:
                    pipe.decr(key)
                pipe.execute()
        return [count <= self.per_day for count in counts]

    def give_back(self, address: str) -> None:
        self.redis.decr(self._key(address))

    def free_in(self, address: str) -> float:
        ttl = self.redis.ttl(self._key(address))
        return float(ttl) if ttl and ttl > 0 else float(DAY)


def _claim(appeal_ids: list[int], job_id: str) -> tuple[list[Any], list[Any]]:
    now = utcnow()
    confirmations = db.session.execute(
        update(_appeals)
        .where(
            _appeals.c.id.in_(appeal_ids),
            _appeals.c.status == Status.AWAITING_CONFIRMATION,
            _appeals.c.confirmation_sent_at.is_(None),
        )
        .values(confirmation_sent_at=now, job_id=job_id)
        .returning(*_appeals.c)
    ).all()
    notices = db.session.execute(
        update(_appeals)
        .where(_appeals.c.id.in_(appeal_ids), _appeals.c.notice_requested_at.is_not(None))
        .values(notice_requested_at=None)
        .returning(*_appeals.c)
    ).all()
    db.session.commit()
    return confirmations, notices


def send(
    appeal_ids: list[int],
    *,
    job_id: str,
    relay: RelaySettings,
    transport: RelayConnection,
    limit: DailyLimit,
) -> dict[str, int]:
    confirmations, notices = _claim(appeal_ids, job_id)
    counts = dict.fromkeys(("sent", "limited", "retrying", "failed"), 0)
    counts["claimed"] = len(confirmations) + len(notices)
    ready: deque[tuple[Any, Outgoing]] = deque()
    for locale, group in _by_locale([*confirmations, *notices]).items():
        allowed = limit.take_all([appeal.email for appeal in group])
        with force_locale(locale):  # the supporter's interface language, not the letter's
            for appeal, ok in zip(group, allowed, strict=True):
                _compose(appeal, ok, relay, limit, ready, counts)
    try:
        for appeal, result in transmit(transport, ready):
            confirming = appeal.status == Status.AWAITING_CONFIRMATION
            if isinstance(result, SessionLost):
                limit.give_back(appeal.email)
                if confirming:
                    _later(appeal, f"relay unavailable: {result.reason}", counted=False)
                counts["retrying"] += 1
                continue
            [(verdict, reply)] = verdicts(result).values()
            if verdict is Verdict.ACCEPTED:
                counts["sent"] += 1
            elif not confirming:
                counts["failed"] += 1  # a notice is not worth a second try
            elif verdict is Verdict.PERMANENT or appeal.attempts + 1 >= MAX_ATTEMPTS:
                states.move(
                    [appeal.id],
                    Status.AWAITING_CONFIRMATION,
                    Status.FAILED,
                    reason=f"confirmation e-mail: {reply}",
                )
                counts["failed"] += 1
            else:
                limit.give_back(appeal.email)
                _later(appeal, f"confirmation e-mail: {reply}", counted=True)
                counts["retrying"] += 1
    finally:
        transport.close()
        db.session.commit()
    return counts


def _by_locale(appeals: list[Any]) -> dict[str, list[Any]]:
    """The batch by the interface language its supporters used (English for appeals
    from before it was stored), so that each language is switched to once."""
    groups: dict[str, list[Any]] = {}
    for appeal in appeals:
        groups.setdefault(supported(appeal.locale) or DEFAULT_LANGUAGE, []).append(appeal)
    return groups


def _compose(
    appeal: Any,
    allowed: bool,
    relay: RelaySettings,
    limit: DailyLimit,
    ready: deque[tuple[Any, Outgoing]],
    counts: dict[str, int],
) -> None:
    """The appeal's mail, ready to go, where ``allowed`` (it was taken from the
    address's daily share); else the confirmation waits for the next day."""
    confirming = appeal.status == Status.AWAITING_CONFIRMATION
    if not allowed:
        counts["limited"] += 1
        if confirming:  # tomorrow, then
            _later(appeal, "confirmation e-mail: one a day", wait=limit.free_in(appeal.email))
        return
    if confirming:
        token = confirmation_token(appeal)
        if appeal.confirm_token_hash != token_hash(token):
            # An appeal from before tokens were derived: its link becomes this one.
            db.session.execute(
                update(_appeals)
                .where(_appeals.c.id == appeal.id)
                .values(confirm_token_hash=token_hash(token))
            )
        ready.append((appeal, confirmation_message(appeal, token, relay)))
    else:
        ready.append((appeal, notice_message(appeal, relay)))


def _later(appeal: Any, reason: str, *, counted: bool = False, wait: float | None = None) -> None:
    """Give the claim back; the dispatcher sends it again when its time comes."""
    attempts = appeal.attempts + (1 if counted else 0)
    delay = timedelta(seconds=wait) if wait is not None else backoff(max(attempts, 1))
    db.session.execute(
        update(_appeals)
        .where(_appeals.c.id == appeal.id, _appeals.c.status == Status.AWAITING_CONFIRMATION)
        .values(
            confirmation_sent_at=None,
            attempts=attempts,
            next_attempt_at=utcnow() + delay,
            status_reason=reason,
        )
    )


def daily_limit(redis: Redis) -> DailyLimit:
    return DailyLimit(redis, int(current_app.config["CONFIRMATION_MAILS_PER_DAY"]))
