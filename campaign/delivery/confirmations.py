"""Confirmation mail to supporters, in batches over one relay session. Never paced.

The link's token is derived from the appeal (see :func:`~campaign.appeals.confirmation_token`),
so a confirmation sent twice carries the same link and the first one still works.
A batch claims its appeals by stamping ``confirmation_sent_at``; a transient
failure takes the stamp back and sets the time of the next try.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from sqlalchemy import update

from .. import states
from ..appeals import confirmation_token, token_hash
from ..db import db, utcnow
from ..mail import Outgoing, confirmation_message
from ..models import Appeal, Status
from ..settings import RelaySettings
from .policy import MAX_ATTEMPTS, Verdict, backoff, verdicts
from .runner import transmit
from .transport import RelayConnection, SessionLost

_appeals = Appeal.__table__


def send(
    appeal_ids: list[int], *, job_id: str, relay: RelaySettings, transport: RelayConnection
) -> dict[str, int]:
    now = utcnow()
    rows = db.session.execute(
        update(_appeals)
        .where(
            _appeals.c.id.in_(appeal_ids),
            _appeals.c.status == Status.AWAITING_CONFIRMATION,
            _appeals.c.confirmation_sent_at.is_(None),
        )
        .values(confirmation_sent_at=now, job_id=job_id)
        .returning(*_appeals.c)
    ).all()
    db.session.commit()
    counts = {"claimed": len(rows), "sent": 0, "retrying": 0, "failed": 0}
    ready: deque[tuple[Any, Outgoing]] = deque()
    for appeal in rows:
        token = confirmation_token(appeal)
        if appeal.confirm_token_hash != token_hash(token):
            # An appeal from before tokens were derived: its link becomes this one.
            db.session.execute(
                update(_appeals)
                .where(_appeals.c.id == appeal.id)
                .values(confirm_token_hash=token_hash(token))
            )
        ready.append((appeal, confirmation_message(appeal, token, relay)))
    try:
        for appeal, result in transmit(transport, ready):
            if isinstance(result, SessionLost):
                _later(appeal, f"relay unavailable: {result.reason}", counted=False)
                counts["retrying"] += 1
                continue
            [(verdict, reply)] = verdicts(result).values()
            if verdict is Verdict.ACCEPTED:
                counts["sent"] += 1
            elif verdict is Verdict.PERMANENT or appeal.attempts + 1 >= MAX_ATTEMPTS:
                states.move(
                    [appeal.id],
                    Status.AWAITING_CONFIRMATION,
                    Status.FAILED,
                    reason=f"confirmation e-mail: {reply}",
                )
                counts["failed"] += 1
            else:
                _later(appeal, f"confirmation e-mail: {reply}", counted=True)
                counts["retrying"] += 1
    finally:
        transport.close()
        db.session.commit()
    return counts


def _later(appeal: Any, reason: str, *, counted: bool) -> None:
    """Give the claim back; the dispatcher sends it again when its time comes."""
    attempts = appeal.attempts + (1 if counted else 0)
    db.session.execute(
        update(_appeals)
        .where(_appeals.c.id == appeal.id, _appeals.c.status == Status.AWAITING_CONFIRMATION)
        .values(
            confirmation_sent_at=None,
            attempts=attempts,
            next_attempt_at=utcnow() + backoff(max(attempts, 1)),
            status_reason=reason,
        )
    )
