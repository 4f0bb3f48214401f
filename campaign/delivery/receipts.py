"""Receipts: once the main addressee's copy of an appeal is accepted, its supporter gets
one mail with a copy of their letter and the link to its status page.

One receipt, not two: a batch claims its appeals by stamping ``receipt_sent_at`` in a
guarded UPDATE (only where it is still empty), so a job run twice, a recovered appeal
or a second dispatcher finds nothing left to send. A transient failure gives the
stamp back, and a later look sends it.

A receipt carries the whole letter, so it goes only to an address that proved to be
its owner's: a confirmation mail went there (``confirmation_sent_at``) and its link
confirmed the appeal. Not to synthetic load, nor where an admin switched confirmation
off (nobody checked that address: a receipt would let anyone mail a letter of their
own to it). Nor to an erased appeal, nor one whose main copy was accepted more than
:data:`RECEIPT_WITHIN` ago (sent before receipts existed, a dispatcher stopped for
days): a late receipt surprises more than it tells. Receipts are not counted against
``CONFIRMATION_MAILS_PER_DAY``: only the owner's confirmation leads to one, at most
one per appeal.

Which appeals may be owed one is found cheaply (:class:`Watch`): those that left
``sending`` since the last look, read from the events' primary key, and after a start
and every :data:`CATCH_UP_SECONDS` every appeal whose main copy was accepted within
:data:`RECEIPT_WITHIN`.

A receipt speaks the supporter's interface language (``appeals.locale``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import and_, exists, func, not_, or_, select, update

from .. import states
from ..campaigns import get_campaign
from ..db import db, utcnow
from ..digest_message import neutral_letter
from ..digests import digest_dates
from ..i18n import DEFAULT, current_language, supported
from ..letters import diplomats_of, letter_for
from ..mail import NAME_IN_SUPPORTER_MAIL, TEST_MARK, Outgoing, status_url, supporter_mail
from ..models import Appeal, AppealEvent, Delivery, Recipient, Status
from ..settings import RelaySettings
from . import recipients
from .policy import Verdict, verdicts
from .runner import transmit
from .transport import RelayConnection, SessionLost

RECEIPT_WITHIN = timedelta(days=1)
"""How long after the main copy's acceptance a receipt may still go."""

CATCH_UP_SECONDS = 900.0
"""How often the dispatcher also looks at every appeal that may be owed a receipt (a
given-back claim, an event it could not see yet)."""

RECEIPT_LAG = 5.0
"""Seconds the dispatcher leaves new events before reading them: an event's id is
taken before its transaction commits, so a younger id may commit first."""

_appeals = Appeal.__table__
_recipients = Recipient.__table__
_events = AppealEvent.__table__


def _owed(since: datetime) -> Any:
    """The appeals owed a receipt: confirmed through a mailed link, not erased, none
    sent yet, and their main copy accepted after ``since``, and not in test mode (it
    went to a staff address: no receipt says that it reached the minister)."""
    return and_(
        _appeals.c.receipt_sent_at.is_(None),
        _appeals.c.erased_at.is_(None),
        _appeals.c.confirmation_sent_at.is_not(None),
        exists().where(
            _recipients.c.appeal_id == _appeals.c.id,
            _recipients.c.role == "to",
            _recipients.c.status == Delivery.ACCEPTED,
            _recipients.c.accepted_at >= since,
            or_(
                _recipients.c.last_reply.is_(None),
                # "250 [TEST] sent to <staff> instead: …" (campaign.delivery.runner)
                not_(_recipients.c.last_reply.contains(TEST_MARK, autoescape=True)),
            ),
        ),
    )


class Watch:
    """The dispatcher's look-out for appeals owed a receipt; the last event read is
    this process's memory (a restart catches up)."""

    def __init__(self) -> None:
        self.read_up_to: int | None = None
        self.seen: deque[tuple[float, int]] = deque()  # (when, newest event id then)
        self.caught_up_at = float("-inf")

    def due(self, lag: float = RECEIPT_LAG) -> tuple[list[tuple[int, str]], int]:
        """(appeal id, campaign) of the appeals that may be owed a receipt, and the
        event id to :meth:`advance` to once they are handed out. Reads the events older
        than ``lag`` seconds (0: all)."""
        now = time.monotonic()
        newest = int(db.session.scalar(select(func.max(_events.c.id))) or 0)
        since = utcnow() - RECEIPT_WITHIN
        if self.read_up_to is None or now - self.caught_up_at >= CATCH_UP_SECONDS:
            rows = db.session.execute(
                select(_appeals.c.id, _appeals.c.campaign).where(_owed(since))
            ).all()
            self.caught_up_at = now
            self.seen.clear()
            return [(r.id, r.campaign) for r in rows], newest
        self.seen.append((now, newest))
        up_to = self.read_up_to
        while self.seen and self.seen[0][0] <= now - lag:
            up_to = max(up_to, self.seen.popleft()[1])
        if up_to <= self.read_up_to:
            return [], up_to
        moved = (
            select(_events.c.appeal_id)
            .where(
                _events.c.id > self.read_up_to,
                _events.c.id <= up_to,
                _events.c.from_status == Status.SENDING,
            )
            .scalar_subquery()
        )
        rows = db.session.execute(
            select(_appeals.c.id, _appeals.c.campaign).where(_appeals.c.id.in_(moved), _owed(since))
        ).all()
        return [(r.id, r.campaign) for r in rows], up_to

    def advance(self, up_to: int) -> None:
        self.read_up_to = max(self.read_up_to or 0, up_to)


def _claim(appeal_ids: list[int]) -> list[Any]:
    now = utcnow()
    rows = db.session.execute(
        update(_appeals)
        .where(_appeals.c.id.in_(appeal_ids), _owed(now - RECEIPT_WITHIN))
        .values(receipt_sent_at=now)
        .returning(*_appeals.c)
    ).all()
    db.session.commit()
    return sorted(rows, key=lambda r: r.id)


def _give_back(appeal_ids: Iterable[int]) -> None:
    ids = list(appeal_ids)
    if ids:
        db.session.execute(
            update(_appeals).where(_appeals.c.id.in_(ids)).values(receipt_sent_at=None)
        )


def send(
    appeal_ids: list[int], *, relay: RelaySettings, transport: RelayConnection
) -> dict[str, int]:
    """Send the receipts these appeals are owed; returns how many went, failed or wait."""
    claimed = _claim(appeal_ids)
    counts = {"claimed": len(claimed), "sent": 0, "retrying": 0, "failed": 0}
    unsent = {appeal.id for appeal in claimed}
    try:
        ready = deque(_compose(claimed, relay))
        for appeal, result in transmit(transport, ready):
            if isinstance(result, SessionLost):
                counts["retrying"] += 1
                continue
            [(verdict, reply)] = verdicts(result).values()
            if verdict is Verdict.ACCEPTED:
                unsent.discard(appeal.id)
                counts["sent"] += 1
            elif verdict is Verdict.PERMANENT:
                unsent.discard(appeal.id)  # refused for good: no second try
                states.noted([appeal.id], appeal.status, f"receipt refused: {reply}")
                counts["failed"] += 1
            else:
                counts["retrying"] += 1
    finally:
        # Whatever did not go (a lost session, a 4xx, an error on the way) is owed
        # again; the dispatcher's next catch-up finds it.
        _give_back(unsent)
        transport.close()
        db.session.commit()
    if counts["retrying"]:
        current_app.logger.warning("%d receipt(s) not sent; tried again later", counts["retrying"])
    return counts


def _compose(claimed: list[Any], relay: RelaySettings) -> list[tuple[Any, Outgoing]]:
    """Each receipt in its supporter's interface language, each language switched to once."""
    copies = recipients.load(appeal.id for appeal in claimed)
    in_digest = digest_dates(appeal.id for appeal in claimed)
    diplomats: dict[str, dict[str, list[Any]]] = {}
    by_locale: dict[str, list[Any]] = {}
    for appeal in claimed:
        by_locale.setdefault(supported(appeal.locale) or DEFAULT, []).append(appeal)
    ready = []
    for locale, group in by_locale.items():
        with force_locale(locale):
            for appeal in group:
                campaign = get_campaign(appeal.campaign)
                if campaign.slug not in diplomats:
                    diplomats[campaign.slug] = diplomats_of(campaign)
                on_file = diplomats[campaign.slug].get(appeal.country, [])
                message = receipt_message(
                    appeal,
                    copies.get(appeal.id, []),
                    relay,
                    on_file,
                    digest_at=in_digest.get(appeal.id),
                )
                ready.append((appeal, message))
    return ready


def receipt_message(
    appeal: Any,
    copies: list[recipients.Copy],
    relay: RelaySettings,
    diplomats: list[Any],
    digest_at: datetime | None = None,
) -> Outgoing:
    """The receipt, in the interface language in force: where the appeal went, the
    link to its status page, and the letter that went in the supporter's name; or, for
    an appeal that went in a digest (``digest_at``), that digest's date and letter."""
    campaign = get_campaign(appeal.campaign)
    if digest_at is not None:
        letter: Any = neutral_letter(campaign)
    else:
        letter = letter_for(campaign, appeal, relay.org_name, diplomats)
    language = current_language()
    name = appeal.name[:NAME_IN_SUPPORTER_MAIL]
    return supporter_mail(
        appeal,
        "receipt",
        relay,
        name,
        name=name,
        copies=sorted(copies, key=lambda c: c.role != "to"),
        accepted=Delivery.ACCEPTED,
        failed=Delivery.FAILED,
        letter=letter,
        digest_at=digest_at,
        status_url=status_url(appeal.public_id, language),
        days=int(float(current_app.config["RETENTION_DAYS"])),
    )
