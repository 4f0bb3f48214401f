"""A batch of appeals: claiming it, classifying the relay's replies, and recording
every outcome in the database in bulk, with the acceptance journal in between."""

from __future__ import annotations

import smtplib
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, update

from . import journal
from .db import db, utcnow
from .mail import Outgoing
from .models import Appeal, AppealEvent, Status
from .queue import rq

MAX_ATTEMPTS = 6
"""Delivery attempts per appeal before it is failed for good."""

RETRY_BACKOFF = (30, 60, 300, 900, 1800)
"""Seconds to wait before attempt 2, 3, …"""

COMMIT_EVERY = 200
"""Sent appeals recorded per database write (the journal covers the gap)."""

COMMIT_SECONDS = 2.0
"""…or this many seconds, whichever comes first; also the batch's heartbeat."""

SESSION_ERRORS = (
    smtplib.SMTPConnectError,
    smtplib.SMTPHeloError,
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPNotSupportedError,
    smtplib.SMTPServerDisconnected,
)
"""SMTP errors that say nothing about the appeal: the relay session is the problem."""


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1])


def is_session_error(exc: BaseException) -> bool:
    """True if the relay or the network failed, not this one message."""
    if not isinstance(exc, smtplib.SMTPException):
        return isinstance(exc, OSError)  # refused, reset, timed out (SMTPException is one too)
    return isinstance(exc, SESSION_ERRORS) or closing(exc)


def closing(exc: BaseException) -> bool:
    """A 421: the relay is closing the session, whatever command it answered."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421


def classify(exc: BaseException) -> tuple[bool, str]:
    """(permanent?, reason) for an error from the relay. Only 5xx replies are permanent."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{r}: {c} {m.decode('utf-8', 'replace')}" for r, (c, m) in exc.recipients.items()
        )
        return all(c >= 500 for c in codes), f"recipients refused: {detail}"
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        permanent = exc.smtp_code >= 500 and not isinstance(exc, SESSION_ERRORS)
        return permanent, f"{exc.smtp_code} {text}"
    return False, f"{type(exc).__name__}: {exc}"


_appeals = Appeal.__table__
_RECORD = (
    update(_appeals)
    # Only rows this job still holds: if the sweeper gave them to another job after
    # a lost heartbeat, this one must not overwrite what the other recorded.
    .where(
        _appeals.c.id == bindparam("_id"),
        _appeals.c.job_id == bindparam("_job"),
        _appeals.c.status == Status.SENDING,
    )
    .values(
        status=bindparam("_status"),
        status_reason=bindparam("_reason"),
        sent_at=bindparam("_sent_at"),
        message_id=bindparam("_message_id"),
        next_attempt_at=bindparam("_next"),
        attempts=bindparam("_attempts"),
        delivery_report=bindparam("_report"),
        updated_at=bindparam("_now"),
    )
)


class Batch:
    """The outcomes of one job, written to the database in bulk."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.rows: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.journaled: list[int] = []
        self.last_flush = time.monotonic()
        self.counts: dict[str, int] = {}
        self.journal = journal.Journal(rq.connection())

    def _add(
        self,
        appeal: Appeal,
        status: str,
        reason: str | None,
        *,
        attempts: int,
        next_at: datetime | None = None,
        sent: Outgoing | None = None,
        report: dict[str, list[object]] | None = None,
        event: bool = True,
    ) -> None:
        now = utcnow()
        self.rows.append(
            {
                "_id": appeal.id,
                "_job": self.job_id,
                "_status": status,
                "_reason": reason,
                "_sent_at": now if sent else None,
                "_message_id": sent.message_id if sent else None,
                "_next": next_at,
                "_attempts": attempts,
                "_report": report,
                "_now": now,
            }
        )
        if event:
            self.events.append(
                {
                    "appeal_id": appeal.id,
                    "from_status": Status.SENDING,
                    "to_status": status,
                    "reason": reason,
                    "at": now,
                }
            )
        self.counts[status] = self.counts.get(status, 0) + 1

    def sent(self, appeal: Appeal, outgoing: Outgoing, refused: dict[str, tuple[int, str]]) -> None:
        self.journal.note(appeal.id, outgoing.message_id)
        self.journaled.append(appeal.id)
        report: dict[str, list[object]] = {
            r: [250, "accepted"] for r in outgoing.recipients if r not in refused
        }
        report.update({r: [code, text] for r, (code, text) in refused.items()})
        reason = "; ".join(f"{r} refused: {c} {m}" for r, (c, m) in refused.items()) or None
        self._add(
            appeal, Status.SENT, reason, attempts=appeal.attempts, sent=outgoing, report=report
        )

    def failed(
        self,
        appeal: Appeal,
        reason: str,
        permanent: bool,
        report: dict[str, list[object]] | None = None,
    ) -> None:
        if permanent or appeal.attempts >= MAX_ATTEMPTS:
            self._add(appeal, Status.FAILED, reason, attempts=appeal.attempts, report=report)
        else:
            self._add(
                appeal,
                Status.RETRYING,
                reason,
                attempts=appeal.attempts,
                report=report,
                next_at=utcnow() + backoff(appeal.attempts),
            )

    def relay_unavailable(self, appeal: Appeal, reason: str) -> None:
        self._add(
            appeal,
            Status.RETRYING,
            reason,
            attempts=appeal.attempts - 1,
            next_at=utcnow() + backoff(appeal.attempts),
        )

    def paced(self, appeal: Appeal, wait: float) -> None:
        # Waiting for a token is not an attempt, and not worth an event row each time.
        self._add(
            appeal,
            Status.QUEUED,
            "paced",
            attempts=appeal.attempts - 1,
            next_at=utcnow() + timedelta(seconds=wait),
            event=False,
        )

    def due(self) -> bool:
        return (
            len(self.rows) >= COMMIT_EVERY or time.monotonic() - self.last_flush >= COMMIT_SECONDS
        )

    def flush(self) -> None:
        self.journal.settle()  # every note is in Redis before the rows it covers
        if self.rows:
            db.session.execute(_RECORD, self.rows)
        if self.events:
            db.session.execute(insert(AppealEvent), self.events)
        # Heartbeat: the appeals this job still holds are not abandoned.
        db.session.execute(
            update(Appeal)
            .where(Appeal.job_id == self.job_id, Appeal.status == Status.SENDING)
            .values(updated_at=utcnow())
        )
        db.session.commit()
        self.journal.clear(self.journaled)
        self.rows, self.events, self.journaled = [], [], []
        self.last_flush = time.monotonic()


def claim(appeal_ids: list[int], job_id: str) -> list[Any]:
    """Move the batch's appeals to ``sending``; return those this job got, as plain
    rows (ORM objects would be expired and reloaded one by one after each commit)."""
    now = utcnow()
    claimed = db.session.scalars(
        update(Appeal)
        .where(Appeal.id.in_(appeal_ids), Appeal.status.in_((Status.QUEUED, Status.RETRYING)))
        .values(status=Status.SENDING, attempts=Appeal.attempts + 1, updated_at=now, job_id=job_id)
        .returning(Appeal.id)
    ).all()
    db.session.commit()
    if not claimed:
        return []
    return list(
        db.session.execute(
            db.select(*_appeals.c).where(_appeals.c.id.in_(claimed)).order_by(_appeals.c.id)
        ).all()
    )
