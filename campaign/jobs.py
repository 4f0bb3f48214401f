"""RQ jobs. Thin: they carry ids only, claim rows in the database, and let
unexpected exceptions through so that RQ retries them.

Running a job twice never sends an appeal twice: ``deliver_appeals`` only
sends the appeals it moved from ``queued``/``retrying`` to ``sending`` itself.
"""

from __future__ import annotations

import smtplib
from datetime import timedelta

from flask import current_app
from sqlalchemy import update

from .appeals import new_token, record
from .db import db, utcnow
from .delivery import RelayConnection
from .mail import appeal_message, confirmation_message
from .models import Appeal, Status
from .settings import relay_settings

MAX_ATTEMPTS = 6
"""Delivery attempts per appeal before it is failed for good."""

RETRY_BACKOFF = (30, 60, 300, 900, 1800)
"""Seconds to wait before attempt 2, 3, …"""


_SESSION_ERRORS = (
    smtplib.SMTPConnectError,
    smtplib.SMTPHeloError,
    smtplib.SMTPAuthenticationError,
    smtplib.SMTPNotSupportedError,
)


class TransientDeliveryError(Exception):
    """Some appeals in the batch hit a temporary error; RQ retries the job."""


def _connection(relay: object) -> RelayConnection:
    return RelayConnection(
        relay,  # type: ignore[arg-type]
        loopback_only=current_app.config["MAIL_LOOPBACK_ONLY"],
        max_emails=current_app.config.get("MAIL_MAX_EMAILS"),
    )


def send_confirmation(appeal_id: int) -> None:
    """Send the supporter a fresh confirmation link."""
    appeal = db.session.get(Appeal, appeal_id)
    if appeal is None or appeal.status != Status.AWAITING_CONFIRMATION:
        return
    token, hashed = new_token()
    appeal.confirm_token_hash = hashed
    db.session.commit()
    relay = relay_settings()
    outgoing = confirmation_message(appeal, token, relay)
    with _connection(relay) as connection:
        connection.send_bytes(outgoing.envelope_from, outgoing.recipients, outgoing.data)


def _claim(appeal_ids: list[int]) -> list[Appeal]:
    now = utcnow()
    claimed = db.session.scalars(
        update(Appeal)
        .where(Appeal.id.in_(appeal_ids), Appeal.status.in_((Status.QUEUED, Status.RETRYING)))
        .values(status=Status.SENDING, attempts=Appeal.attempts + 1, updated_at=now)
        .returning(Appeal.id)
    ).all()
    record(claimed, None, Status.SENDING, at=now)
    db.session.commit()
    if not claimed:
        return []
    return list(
        db.session.scalars(db.select(Appeal).where(Appeal.id.in_(claimed)).order_by(Appeal.id))
    )


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(permanent?, reason) for an error from the relay."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [c for c, _ in exc.recipients.values()]
        detail = "; ".join(
            f"{r}: {c} {m.decode('utf-8', 'replace')}" for r, (c, m) in exc.recipients.items()
        )
        return all(c >= 500 for c in codes), f"recipients refused: {detail}"
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
        return exc.smtp_code >= 500, f"{exc.smtp_code} {text}"
    return False, f"{type(exc).__name__}: {exc}"


def _fail_or_retry(appeal: Appeal, reason: str, permanent: bool) -> None:
    if permanent or appeal.attempts >= MAX_ATTEMPTS:
        appeal.status = Status.FAILED
        appeal.next_attempt_at = None
    else:
        appeal.status = Status.RETRYING
        delay = RETRY_BACKOFF[min(appeal.attempts, len(RETRY_BACKOFF)) - 1]
        appeal.next_attempt_at = utcnow() + timedelta(seconds=delay)
    appeal.status_reason = reason
    record([appeal.id], Status.SENDING, appeal.status, reason)


def deliver_appeals(appeal_ids: list[int]) -> dict[str, int]:
    """Send a batch of appeals over one relay connection and record each outcome."""
    appeals = _claim([int(i) for i in appeal_ids])
    if not appeals:
        return {"claimed": 0}
    relay = relay_settings()
    outcome = {"claimed": len(appeals), "sent": 0, "failed": 0, "retrying": 0}
    pending = list(appeals)
    try:
        with _connection(relay) as connection:
            while pending:
                appeal = pending[0]
                outgoing = appeal_message(appeal, relay)
                try:
                    result = connection.send_bytes(
                        outgoing.envelope_from, outgoing.recipients, outgoing.data
                    )
                except (
                    smtplib.SMTPRecipientsRefused,
                    smtplib.SMTPDataError,
                    smtplib.SMTPSenderRefused,
                ) as exc:
                    # This message was refused; the session goes on with the next one.
                    permanent, reason = _classify(exc)
                    _fail_or_retry(appeal, reason, permanent)
                    pending.pop(0)
                    continue
                pending.pop(0)
                appeal.status = Status.SENT
                appeal.sent_at = utcnow()
                appeal.message_id = outgoing.message_id
                appeal.next_attempt_at = None
                appeal.status_reason = (
                    "; ".join(f"{r} refused: {c} {m}" for r, (c, m) in result.refused.items())
                    or None
                )
                record([appeal.id], Status.SENDING, Status.SENT, appeal.status_reason)
    except (smtplib.SMTPException, OSError) as exc:
        permanent, reason = _classify(exc)
        # A relay that refuses us as a whole (greeting, login, TLS) is a settings
        # problem for the admin, not a verdict on these appeals: keep retrying.
        permanent = permanent and not isinstance(exc, _SESSION_ERRORS)
        for appeal in pending:
            _fail_or_retry(appeal, reason, permanent)
    db.session.commit()
    for appeal in appeals:
        outcome[appeal.status] = outcome.get(appeal.status, 0) + 1
    if outcome.get(Status.RETRYING):
        raise TransientDeliveryError(f"{outcome[Status.RETRYING]} appeal(s) to retry")
    return outcome
