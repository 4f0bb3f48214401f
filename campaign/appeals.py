"""Appeals: submitting, confirming and moving between states.

Services own the rules and the transaction, and enqueue work only after the
commit, so a job never looks for a row that is not there yet. If Redis is down
at that moment the appeal is still stored; the sweeper finds it again.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from .campaigns import Campaign
from .db import db, utcnow
from .exceptions import CampaignClosed, DuplicateAppeal, TokenInvalid
from .intake import SupporterInput
from .models import Appeal, AppealEvent, CampaignOption, Status
from .queue import enqueue_confirmation, enqueue_delivery, new_job_id


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A confirmation token and the hash that is stored in its place."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def options_for(slug: str) -> CampaignOption:
    option = db.session.get(CampaignOption, slug)
    return (
        option
        if option is not None
        else CampaignOption(slug=slug, confirmation_required=True, paused=False)
    )


def record(
    appeal_ids: Iterable[int],
    from_status: str | None,
    to_status: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> None:
    """Add one event row per appeal, in bulk; the caller commits."""
    at = at or utcnow()
    rows = [
        {
            "appeal_id": i,
            "from_status": from_status,
            "to_status": to_status,
            "reason": reason,
            "at": at,
        }
        for i in appeal_ids
    ]
    if rows:
        db.session.execute(insert(AppealEvent), rows)


def move(appeal: Appeal, to_status: str, reason: str | None = None) -> None:
    record([appeal.id], appeal.status, to_status, reason)
    appeal.status = to_status
    appeal.status_reason = reason


def submit(campaign: Campaign, supporter: SupporterInput) -> Appeal:
    """Store a new appeal. Awaits confirmation unless an admin switched that off."""
    options = options_for(campaign.slug)
    if options.paused:
        raise CampaignClosed(campaign.slug)
    existing = db.session.scalar(
        db.select(Appeal).filter_by(campaign=campaign.slug, email=supporter.email)
    )
    if existing is not None:
        if existing.status != Status.AWAITING_CONFIRMATION:
            raise DuplicateAppeal(campaign.slug)
        # Not confirmed yet: the newer wording wins and a fresh link is sent.
        appeal = existing
        for field in ("name", "language", "country", "message"):
            setattr(appeal, field, getattr(supporter, field))
        record([appeal.id], appeal.status, appeal.status, "resubmitted")
    else:
        appeal = Appeal(
            public_id=str(uuid.uuid4()),
            campaign=campaign.slug,
            name=supporter.name,
            email=supporter.email,
            language=supporter.language,
            country=supporter.country,
            message=supporter.message,
            status=Status.AWAITING_CONFIRMATION,
        )
        db.session.add(appeal)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()
            raise DuplicateAppeal(campaign.slug) from None
        record([appeal.id], None, Status.AWAITING_CONFIRMATION)
        if not options.confirmation_required:
            _confirm(appeal, "confirmation switched off for this campaign")
    appeal.job_id = job_id = new_job_id()
    db.session.commit()
    if appeal.status == Status.AWAITING_CONFIRMATION:
        enqueue_confirmation(appeal.id, job_id)
    else:
        enqueue_delivery([appeal.id], job_id)
    return appeal


def _confirm(appeal: Appeal, reason: str) -> None:
    appeal.confirm_token_hash = None
    appeal.confirmed_at = utcnow()
    move(appeal, Status.QUEUED, reason)


def confirm(token: str) -> Appeal:
    """Confirm the appeal this token belongs to; confirming twice is harmless."""
    if not token or len(token) > 128:
        raise TokenInvalid(token[:16])
    appeal = db.session.scalar(db.select(Appeal).filter_by(confirm_token_hash=token_hash(token)))
    if appeal is None or appeal.status != Status.AWAITING_CONFIRMATION:
        raise TokenInvalid(token[:16])
    job_id = new_job_id()
    claimed = db.session.execute(
        update(Appeal)
        .where(Appeal.id == appeal.id, Appeal.status == Status.AWAITING_CONFIRMATION)
        .values(
            job_id=job_id,
            attempts=0,
            next_attempt_at=None,
            status=Status.QUEUED,
            confirm_token_hash=None,
            confirmed_at=utcnow(),
            status_reason=None,
        )
    ).rowcount
    if claimed != 1:  # a concurrent confirm won
        db.session.rollback()
        raise TokenInvalid(token[:16])
    record([appeal.id], Status.AWAITING_CONFIRMATION, Status.QUEUED, "confirmed by supporter")
    db.session.commit()
    db.session.refresh(appeal)
    enqueue_delivery([appeal.id], job_id)
    return appeal


def counts_by_status() -> dict[str, int]:
    rows = db.session.execute(
        db.select(Appeal.status, db.func.count()).group_by(Appeal.status)
    ).all()
    counts = dict.fromkeys(Status.ALL, 0)
    counts.update({status: n for status, n in rows})
    return counts


#: Manager actions: action → (states it applies to, state it leads to)
STEERING: dict[str, tuple[tuple[str, ...], str]] = {
    "hold": ((Status.QUEUED, Status.RETRYING), Status.HELD),
    "release": ((Status.HELD,), Status.QUEUED),
    "retry": ((Status.FAILED, Status.RETRYING), Status.QUEUED),
    "cancel": (
        (Status.AWAITING_CONFIRMATION, Status.QUEUED, Status.RETRYING, Status.HELD),
        Status.CANCELLED,
    ),
}


def steer(action: str, by: str, appeal_ids: list[int] | None = None) -> int:
    """Apply a manager's action to the given appeals (all that it applies to if None).

    Appeals being sent right now are never touched. Returns how many moved; the
    sweeper enqueues the ones that became due.
    """
    sources, target = STEERING[action]
    query = db.select(Appeal.id, Appeal.status).where(Appeal.status.in_(sources))
    if appeal_ids is not None:
        query = query.where(Appeal.id.in_(appeal_ids))
    rows = db.session.execute(query).all()
    if not rows:
        return 0
    values: dict[str, object] = {"status": target, "status_reason": f"{action} by {by}"}
    if target == Status.QUEUED:
        # A fresh start: due now, with its full number of attempts.
        values.update(next_attempt_at=None, attempts=0, job_id=None)
    moved = 0
    for from_status in {status for _, status in rows}:
        ids = [i for i, status in rows if status == from_status]
        moved += db.session.execute(
            update(Appeal).where(Appeal.id.in_(ids), Appeal.status == from_status).values(**values)
        ).rowcount
        record(ids, from_status, target, f"{action} by {by}")
    db.session.commit()
    return moved
