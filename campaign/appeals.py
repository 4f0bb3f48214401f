"""Appeals: submitting, confirming and steering.

Services own the rules and the transaction, and tell the dispatcher only after the
commit, so a job never looks for a row that is not there yet. If Redis is down at
that moment the appeal is still stored; the dispatcher's next pass finds it.
Every change of state goes through :func:`campaign.states.move`.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from . import states
from .campaigns import Campaign
from .db import db, utcnow
from .delivery.queue import wake_dispatcher
from .exceptions import CampaignClosed, TokenExpired, TokenInvalid
from .intake import SupporterInput
from .models import Appeal, CampaignOption, Delivery, Recipient, Status
from .tokens import confirmation_token, issued_since, token_hash


def options_for(slug: str) -> CampaignOption:
    option = db.session.get(CampaignOption, slug)
    return (
        option
        if option is not None
        else CampaignOption(slug=slug, confirmation_required=True, paused=False)
    )


def submit(campaign: Campaign, supporter: SupporterInput) -> str:
    """Take a submission; returns the status every valid submission is answered with.

    The answer is the same whether or not the address has appealed before, so that no
    one learns it from the form or the API; the owner of the address learns the rest
    by e-mail. A submission never changes an appeal that exists: a pending appeal
    changes only through its owner's confirmation (the confirm page lets them edit
    it), and its link is sent again; an appeal already confirmed gets its owner a
    notice. Supporter mail is limited per address and day (``CONFIRMATION_MAILS_PER_DAY``).
    """
    options = options_for(campaign.slug)
    if options.paused:
        raise CampaignClosed(campaign.slug)
    answer = Status.AWAITING_CONFIRMATION if options.confirmation_required else Status.QUEUED
    existing = db.session.scalar(
        db.select(Appeal).filter_by(campaign=campaign.slug, email=supporter.email)
    )
    if existing is None:
        now = utcnow()
        appeal = Appeal(
            public_id=str(uuid.uuid4()),
            campaign=campaign.slug,
            name=supporter.name,
            email=supporter.email,
            language=supporter.language,
            country=supporter.country,
            message=supporter.message,
            status=Status.AWAITING_CONFIRMATION,
            token_issued_at=now,
            created_at=now,
        )
        appeal.confirm_token_hash = token_hash(confirmation_token(appeal))
        db.session.add(appeal)
        try:
            db.session.flush()
        except IntegrityError:  # the same address, at the same moment: it exists now
            db.session.rollback()
            return answer
        states.created([appeal.id], Status.AWAITING_CONFIRMATION)
        if not options.confirmation_required:
            _confirmed({"id": appeal.id}, reason="confirmation switched off for this campaign")
    elif existing.status == Status.AWAITING_CONFIRMATION:
        _send_link_again(existing, "submitted again: link sent again")
    elif existing.status != Status.CANCELLED and existing.erased_at is None:
        existing.notice_requested_at = utcnow()
    db.session.commit()
    wake_dispatcher()
    return answer


def link_expired(appeal: Any) -> bool:
    return bool(appeal.token_issued_at < issued_since())


def _send_link_again(appeal: Appeal, reason: str) -> None:
    """The same link, or a new one if it expired (the old one opens nothing any more).
    The appeal's words stay as its owner wrote them. The caller commits."""
    if link_expired(appeal):
        appeal.token_issued_at = utcnow()
        appeal.confirm_token_hash = token_hash(confirmation_token(appeal))
    appeal.confirmation_sent_at = None
    states.noted([appeal.id], appeal.status, reason)


def resend(campaign: Campaign, email: str) -> None:
    """ "Send me the link again": the same answer whatever the address, and at most
    the daily number of mails to it."""
    appeal = db.session.scalar(db.select(Appeal).filter_by(campaign=campaign.slug, email=email))
    if appeal is None or appeal.status != Status.AWAITING_CONFIRMATION:
        return
    _send_link_again(appeal, "link asked for again")
    db.session.commit()
    wake_dispatcher()


def _confirmed(
    match: dict[str, Any],
    reason: str,
    changes: dict[str, Any] | None = None,
    newer: dict[str, Any] | None = None,
) -> list[Any]:
    return states.move(
        None,
        Status.AWAITING_CONFIRMATION,
        Status.QUEUED,
        reason=reason,
        values={
            "confirm_token_hash": None,
            "confirmed_at": utcnow(),
            "job_id": None,
            "attempts": 0,
            "next_attempt_at": None,
            **(changes or {}),
        },
        match=match,
        newer=newer,
        returning=("public_id", "campaign", "status"),
    )


def pending(token: str) -> Appeal:
    """The appeal this token confirms, for its owner to review; raises if there is
    none awaiting confirmation, and :class:`TokenExpired` if the link is too old."""
    if not token or len(token) > 128:
        raise TokenInvalid(token[:16])
    appeal = db.session.scalar(db.select(Appeal).filter_by(confirm_token_hash=token_hash(token)))
    if appeal is None or appeal.status != Status.AWAITING_CONFIRMATION:
        raise TokenInvalid(token[:16])
    if link_expired(appeal):
        raise TokenExpired(token[:16])
    return appeal


def confirm(token: str, edited: SupporterInput | None = None) -> Any:
    """Confirm the appeal this token belongs to, with its owner's last edits if any.
    Returns its (id, public_id, campaign, status); a token that matches no appeal
    awaiting confirmation (used twice, say) raises, and so does an expired one."""
    if not token or len(token) > 128:
        raise TokenInvalid(token[:16])
    changes: dict[str, Any] = {}
    if edited is not None:
        changes = {
            "name": edited.name,
            "language": edited.language,
            "country": edited.country,
            "message": edited.message,
        }
    moved = _confirmed(
        {"confirm_token_hash": token_hash(token)},
        reason="confirmed by supporter",
        changes=changes,
        newer={"token_issued_at": issued_since()},
    )
    if not moved:
        db.session.rollback()
        pending(token)  # raises TokenExpired for a link that is only too old
        raise TokenInvalid(token[:16])
    db.session.commit()
    wake_dispatcher()
    return moved[0]


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

    Appeals being sent right now are never touched: ``sending`` is in no action's
    sources. Returns how many moved; the dispatcher picks up the ones now due.
    """
    sources, target = STEERING[action]
    values: dict[str, object] = {}
    if target == Status.QUEUED:
        # A fresh start: due now, with its full number of attempts.
        values.update(next_attempt_at=None, attempts=0, job_id=None)
    moved = [
        row[0]
        for row in states.move(
            appeal_ids, sources, target, reason=f"{action} by {by}", values=values
        )
    ]
    if action == "retry" and moved:
        # The copies that failed get a fresh start too; accepted ones never go twice.
        db.session.execute(
            update(Recipient)
            .where(Recipient.appeal_id.in_(moved), Recipient.status == Delivery.FAILED)
            .values(status=Delivery.PENDING, attempts=0, next_attempt_at=None)
        )
    db.session.commit()
    if moved and target == Status.QUEUED:
        wake_dispatcher()
    return len(moved)
