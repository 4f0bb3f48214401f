"""Appeals: submitting, confirming and steering.

Services own the rules and the transaction, and tell the dispatcher only after the
commit, so a job never looks for a row that is not there yet. If Redis is down at
that moment the appeal is still stored; the dispatcher's next pass finds it.
Every change of state goes through :func:`campaign.states.move`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

from sqlalchemy import update

from . import snapshots, standing, states
from .campaigns import Campaign, all_campaigns, get_campaign
from .db import db, utcnow
from .delivery.queue import wake_dispatcher
from .exceptions import (
    AlreadyConfirmed,
    CampaignClosed,
    CampaignPaused,
    TokenExpired,
    TokenInvalid,
)
from .intake import SupporterInput
from .letters import fingerprint_for
from .models import Appeal, Delivery, Recipient, Status
from .tokens import confirmation_token, issued_since, token_hash


def options_for(slug: str) -> Any:
    """The campaign's switches, read-only: a snapshot at most two seconds old
    (:mod:`campaign.snapshots`), so that a submission reads none from the database."""
    return snapshots.options(slug)


def _insert_new() -> Any:
    """INSERT … ON CONFLICT (campaign, email) DO NOTHING RETURNING id, for this
    database (SQLite and PostgreSQL both have it), built once."""
    dialect = db.engine.dialect.name
    found = _INSERTS.get(dialect)
    if found is None:
        from sqlalchemy.dialects import postgresql, sqlite

        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        found = _INSERTS[dialect] = (
            insert(Appeal.__table__)
            .on_conflict_do_nothing(index_elements=["campaign", "email"])
            .returning(Appeal.__table__.c.id)
        )
    return found


_INSERTS: dict[str, Any] = {}


def _alone() -> Any:
    """A connection on which each statement is a transaction of its own: on PostgreSQL
    one round trip, where the session's transaction costs three (BEGIN, the statement,
    COMMIT). Under a spike of submissions or confirms the round trips, not the
    statements, were most of a request's time (py-spy: the web threads waited on them,
    while PostgreSQL sat idle in transaction waiting for the next)."""
    return db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _insert_alone(row: dict[str, Any]) -> int | None:
    """The new appeal's INSERT alone (the database writes its creation event)."""
    with _alone() as alone:
        return alone.execute(_insert_new(), row).scalar()


def submit(campaign: Campaign, supporter: SupporterInput, record: bool = True) -> str:
    """Take a submission; returns the status every valid submission is answered with.

    The answer is the same whether or not the address has appealed before, so that no
    one learns it from the form or the API; the owner of the address learns the rest
    by e-mail. A submission never changes an appeal that exists: a pending appeal
    changes only through its owner's confirmation (the confirm page lets them edit
    it), and its link is sent again; an appeal already confirmed gets its owner a
    notice. Supporter mail is limited per address and day (``CONFIRMATION_MAILS_PER_DAY``).
    With ``record`` False (the address had its share of submissions for now) the answer
    is the same and nothing changes.
    """
    options = options_for(campaign.slug)
    state = standing.state_of(campaign, options)
    if state == standing.CLOSED:
        raise CampaignClosed(campaign.slug)
    if state == standing.PAUSED:
        raise CampaignPaused(campaign.slug)
    answer = Status.AWAITING_CONFIRMATION if options.confirmation_required else Status.QUEUED
    if not record:
        return answer
    now = utcnow()
    public_id = str(uuid.uuid4())
    row = {
        "public_id": public_id,
        "campaign": campaign.slug,
        "name": supporter.name,
        "email": supporter.email,
        "language": supporter.language,
        "country": supporter.country,
        "message": supporter.message,
        "locale": supporter.locale,
        "fingerprint": fingerprint_for(campaign, supporter),
        "status": Status.AWAITING_CONFIRMATION,
        "attempts": 0,
        "token_issued_at": now,
        "created_at": now,
        "updated_at": now,
        "confirm_token_hash": token_hash(
            confirmation_token(SimpleNamespace(public_id=public_id, token_issued_at=now))
        ),
    }
    # One statement for a new address (the database writes its creation event), and
    # nothing written for a known one: the unique (campaign, email) decides, also
    # between two submissions at once.
    if options.confirmation_required:
        new_id = _insert_alone(row)
    else:
        new_id = db.session.connection().execute(_insert_new(), row).scalar()
        if new_id is not None:
            _confirmed({"id": new_id}, reason="confirmation switched off for this campaign")
            db.session.commit()
    if new_id is not None:
        wake_dispatcher()
        return answer
    existing = db.session.scalar(
        db.select(Appeal).filter_by(campaign=campaign.slug, email=supporter.email)
    )
    if existing is None:  # erased since, between the two statements: as if never there
        db.session.rollback()
        return answer
    if existing.status == Status.AWAITING_CONFIRMATION:
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
    within: dict[str, Any] | None = None,
    on: Any = None,
) -> list[Any]:
    return states.move(
        None,
        Status.AWAITING_CONFIRMATION,
        Status.QUEUED,
        reason=reason,
        # The token's hash stays (until retention): a used link is recognised, and
        # its owner told that the appeal went, not that the link is broken.
        values={
            "confirmed_at": utcnow(),
            "job_id": None,
            "attempts": 0,
            "next_attempt_at": None,
            **(changes or {}),
        },
        match=match,
        newer=newer,
        within=within,
        returning=("public_id", "campaign", "status"),
        on=on,
    )


def pending(token: str) -> Appeal:
    """The appeal this token confirms, for its owner to review; raises if there is
    none awaiting confirmation (:class:`AlreadyConfirmed` if it was confirmed), and
    :class:`TokenExpired` if the link is too old."""
    if not token or len(token) > 128:
        raise TokenInvalid(token[:16])
    appeal = db.session.scalar(db.select(Appeal).filter_by(confirm_token_hash=token_hash(token)))
    if appeal is not None and appeal.status != Status.AWAITING_CONFIRMATION:
        if appeal.confirmed_at is not None:
            raise AlreadyConfirmed(appeal.public_id)
        raise TokenInvalid(token[:16])
    if appeal is None:
        raise TokenInvalid(token[:16])
    if link_expired(appeal):
        raise TokenExpired(token[:16])
    return appeal


def confirm(token: str, edited: SupporterInput | None = None) -> Any:
    """Confirm the appeal this token belongs to, with its owner's last edits if any.
    Returns its (id, public_id, campaign, status); a token that matches no appeal
    awaiting confirmation (used twice, say) raises, and so does an expired one, and
    so does a campaign closed since the appeal was written (:class:`CampaignClosed`)."""
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
        if edited.locale:  # the language they confirmed in speaks to them from now on
            changes["locale"] = edited.locale
    guard: dict[str, Any] = {
        "match": {"confirm_token_hash": token_hash(token)},
        "newer": {"token_issued_at": issued_since()},
        # Nothing goes in their name after the campaign closed.
        "within": _confirming_campaigns(),
        "reason": "confirmed by supporter",
    }
    if edited is None:  # the API's confirm: one statement, one round trip
        with _alone() as alone:
            moved = _confirmed(**guard, on=alone)
    else:
        moved = _confirmed(**guard, changes=changes)
        if moved:  # their own words now: the letter's text may have changed
            campaign = get_campaign(moved[0].campaign)
            db.session.execute(
                update(Appeal)
                .where(Appeal.id == moved[0].id)
                .values(fingerprint=fingerprint_for(campaign, edited))
            )
            db.session.commit()
    if not moved:
        db.session.rollback()
        _not_confirmed(token)
    wake_dispatcher()
    return moved[0]


def _confirming_campaigns() -> dict[str, list[str]] | None:
    """The campaigns that still confirm appeals, as a condition for :func:`states.move`:
    all but the closed ones; None (no condition) while none is closed, as the list
    costs a fifth of a confirm to bind (measured: 1.29 against 1.0 ms in-process)."""
    campaigns = all_campaigns()
    confirming = [
        slug
        for slug, campaign in campaigns.items()
        if standing.state_of(campaign, options_for(slug)) != standing.CLOSED
    ]
    return None if len(confirming) == len(campaigns) else {"campaign": confirming}


def _not_confirmed(token: str) -> NoReturn:
    """Why a confirmation moved nothing, raised: the link is unknown, used, or too old
    (:func:`pending` raises), or the appeal's campaign closed."""
    appeal = pending(token)
    if standing.state_of(get_campaign(appeal.campaign), options_for(appeal.campaign)) == (
        standing.CLOSED
    ):
        raise CampaignClosed(appeal.campaign)
    raise TokenInvalid(token[:16])  # confirmed a moment ago, by another request


def same_letters(slug: str, fingerprint: str, email: str) -> int:
    """How many others in this campaign wrote the letter with this fingerprint (their
    own name aside): for the preview, which invites a sentence of one's own."""
    return int(
        db.session.scalar(
            db.select(db.func.count())
            .select_from(Appeal)
            .where(
                Appeal.campaign == slug,
                Appeal.fingerprint == fingerprint,
                Appeal.email != email,
                Appeal.status != Status.CANCELLED,
            )
        )
        or 0
    )


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


def steer(
    action: str, by: str, appeal_ids: list[int] | None = None, where: Sequence[Any] | None = None
) -> int:
    """Apply a manager's action to the given appeals (all that it applies to if None),
    or to those that meet the SQL conditions ``where`` (the console's filters).

    Appeals being sent right now are never touched: ``sending`` is in no action's
    sources. Returns how many moved; the dispatcher picks up the ones now due.
    """
    sources, target = STEERING[action]
    if where is not None:
        appeal_ids = list(
            db.session.scalars(db.select(Appeal.id).where(*where, Appeal.status.in_(sources)))
        )
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
    if action == "retry":
        # The copies that failed get a fresh start too; accepted ones never go twice.
        for start in range(0, len(moved), states.CHUNK):  # SQLite: 32,766 values at most
            chunk = moved[start : start + states.CHUNK]
            db.session.execute(
                update(Recipient)
                .where(Recipient.appeal_id.in_(chunk), Recipient.status == Delivery.FAILED)
                .values(status=Delivery.PENDING, attempts=0, next_attempt_at=None)
            )
    db.session.commit()
    if moved and target == Status.QUEUED:
        wake_dispatcher()
    return len(moved)
