"""RQ jobs. Thin: they carry ids only, claim rows in the database, and let
unexpected exceptions through (RQ records them; the sweeper recovers the rows).

Running a job twice never sends an appeal twice: ``deliver_appeals`` only sends
the appeals it moved from ``queued``/``retrying`` to ``sending`` itself.
Temporary failures are not retried by RQ but by the database: the appeal gets
``next_attempt_at`` and the sweeper enqueues it again when that time comes.
"""

from __future__ import annotations

import secrets
import smtplib
import time
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from rq import get_current_job
from sqlalchemy import bindparam, insert, update

from . import journal
from .appeals import new_token
from .campaigns import get_campaign
from .db import db, utcnow
from .delivery import RelayConnection
from .letters import diplomats_for
from .mail import Outgoing, appeal_message, confirmation_message
from .models import Appeal, AppealEvent, Status
from .pacing import Pacer
from .queue import rq
from .settings import RelaySettings, pacing_rules, relay_settings

MAX_ATTEMPTS = 6
"""Delivery attempts per appeal before it is failed for good."""

RETRY_BACKOFF = (30, 60, 300, 900, 1800)
"""Seconds to wait before attempt 2, 3, …"""

COMMIT_EVERY = 50
"""Sent appeals recorded per database write (the journal covers the gap)."""

COMMIT_SECONDS = 2.0
"""…or this many seconds, whichever comes first; also the batch's heartbeat."""

_SESSION_ERRORS = (
    smtplib.SMTPConnectError,
    smtplib.SMTPHeloError,
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPNotSupportedError,
    smtplib.SMTPServerDisconnected,
)
"""SMTP errors that say nothing about the appeal: the relay session is the problem."""


def _connection(relay: RelaySettings) -> RelayConnection:
    return RelayConnection(
        relay,
        loopback_only=current_app.config["MAIL_LOOPBACK_ONLY"],
        max_emails=current_app.config.get("MAIL_MAX_EMAILS"),
    )


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1])


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
        permanent = exc.smtp_code >= 500 and not isinstance(exc, _SESSION_ERRORS)
        return permanent, f"{exc.smtp_code} {text}"
    return False, f"{type(exc).__name__}: {exc}"


# --- confirmations -----------------------------------------------------------------------


def send_confirmation(appeal_id: int) -> None:
    """Send the supporter a fresh confirmation link."""
    appeal = db.session.get(Appeal, appeal_id)
    if appeal is None or appeal.status != Status.AWAITING_CONFIRMATION:
        return
    token, hashed = new_token()
    appeal.confirm_token_hash = hashed
    appeal.attempts += 1
    db.session.commit()
    relay = relay_settings()
    outgoing = confirmation_message(appeal, token, relay)
    try:
        with _connection(relay) as connection:
            connection.send_bytes(outgoing.envelope_from, outgoing.recipients, outgoing.data)
    except (smtplib.SMTPException, OSError) as exc:
        permanent, reason = classify(exc)
        if permanent or appeal.attempts >= MAX_ATTEMPTS:
            appeal.status = Status.FAILED
            _event(appeal.id, Status.AWAITING_CONFIRMATION, Status.FAILED, reason)
        else:
            appeal.next_attempt_at = utcnow() + _backoff(appeal.attempts)
        appeal.status_reason = f"confirmation e-mail: {reason}"
        db.session.commit()
        raise
    appeal.confirmation_sent_at = utcnow()
    appeal.attempts = 0
    appeal.next_attempt_at = None
    appeal.status_reason = None
    db.session.commit()


def _event(appeal_id: int, from_status: str | None, to_status: str, reason: str | None) -> None:
    db.session.add(
        AppealEvent(
            appeal_id=appeal_id, from_status=from_status, to_status=to_status, reason=reason
        )
    )


# --- appeals -----------------------------------------------------------------------------

_appeals = Appeal.__table__
_RECORD = (
    update(_appeals)
    .where(_appeals.c.id == bindparam("_id"))
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
        self.redis = rq.connection()

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
        journal.note(self.redis, appeal.id, outgoing.message_id)
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
                next_at=utcnow() + _backoff(appeal.attempts),
            )

    def relay_unavailable(self, appeal: Appeal, reason: str) -> None:
        self._add(
            appeal,
            Status.RETRYING,
            reason,
            attempts=appeal.attempts - 1,
            next_at=utcnow() + _backoff(appeal.attempts),
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
        journal.clear(self.redis, self.journaled)
        self.rows, self.events, self.journaled = [], [], []
        self.last_flush = time.monotonic()


def _claim(appeal_ids: list[int], job_id: str) -> list[Appeal]:
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
        db.session.scalars(db.select(Appeal).where(Appeal.id.in_(claimed)).order_by(Appeal.id))
    )


def deliver_appeals(appeal_ids: list[int]) -> dict[str, int]:
    """Send a batch of appeals over one relay session and record each outcome."""
    job = get_current_job()
    job_id = job.id if job is not None else "direct-" + secrets.token_hex(8)
    appeals = _claim([int(i) for i in appeal_ids], job_id)
    if not appeals:
        return {"claimed": 0}
    relay = relay_settings()
    pacer = Pacer(rq.connection(), pacing_rules())
    batch = Batch(job_id)
    diplomats: dict[tuple[str, str], list[Any]] = {}
    paced_positions: dict[str, int] = {}
    connection = _connection(relay)
    pending = list(appeals)
    try:
        while pending:
            appeal = pending.pop(0)
            campaign = get_campaign(appeal.campaign)
            key = (appeal.campaign, appeal.country)
            if key not in diplomats:
                diplomats[key] = diplomats_for(campaign, appeal.country)
            outgoing = appeal_message(appeal, relay, diplomats=diplomats[key])
            wait = pacer.wait_for(outgoing.recipients, campaign.to.timezone, utcnow())
            if wait:
                # Spread the waiting appeals over the coming slots instead of
                # waking them all at once for one token.
                bucket, rate = pacer.tightest(outgoing.recipients)
                position = paced_positions.get(bucket, 0)
                paced_positions[bucket] = position + 1
                batch.paced(appeal, wait + position / rate)
                continue
            try:
                result = _send(connection, outgoing)
            except (smtplib.SMTPException, OSError) as exc:
                if _is_session_error(exc):
                    # The relay is unreachable or keeps dropping us: nobody else in
                    # this batch can be sent now either. Not the appeals' fault, so
                    # these attempts do not count towards failing them.
                    reason = classify(exc)[1]
                    for waiting in (appeal, *pending):
                        batch.relay_unavailable(waiting, reason)
                    pending = []
                    continue
                permanent, reason = classify(exc)
                report = None
                if isinstance(exc, smtplib.SMTPRecipientsRefused):
                    report = {
                        r: [c, m.decode("utf-8", "replace")] for r, (c, m) in exc.recipients.items()
                    }
                batch.failed(appeal, reason, permanent, report)
            else:
                batch.sent(appeal, outgoing, result)
            if batch.due():
                batch.flush()
    finally:
        connection.close()
        batch.flush()
    return {"claimed": len(appeals), **batch.counts}


def _is_session_error(exc: BaseException) -> bool:
    """True if the relay or the network failed, not this one message."""
    if not isinstance(exc, smtplib.SMTPException):
        return isinstance(exc, OSError)  # refused, reset, timed out (SMTPException is one too)
    return isinstance(exc, _SESSION_ERRORS) or _closing(exc)


def _closing(exc: BaseException) -> bool:
    """A 421: the relay is closing the session, whatever command it answered."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421


def _send(connection: RelayConnection, outgoing: Outgoing) -> dict[str, tuple[int, str]]:
    """Send, reconnecting once if the relay closed the session (its per-connection
    limit, a 421 or an idle timeout)."""
    for attempt in (1, 2):
        try:
            return connection.send_bytes(
                outgoing.envelope_from, outgoing.recipients, outgoing.data
            ).refused
        except (
            smtplib.SMTPServerDisconnected,
            smtplib.SMTPResponseException,
            smtplib.SMTPRecipientsRefused,
        ) as exc:
            if attempt == 2 or not (
                _closing(exc) or isinstance(exc, smtplib.SMTPServerDisconnected)
            ):
                raise
    raise AssertionError("unreachable")
