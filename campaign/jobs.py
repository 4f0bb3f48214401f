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
from collections import deque
from typing import Any

from flask import current_app
from rq import get_current_job

from .appeals import new_token
from .batches import MAX_ATTEMPTS, Batch, backoff, claim, classify, is_session_error
from .campaigns import get_campaign
from .db import db, utcnow
from .delivery import RelayConnection, SendResult
from .letters import diplomats_for
from .mail import Outgoing, appeal_message, confirmation_message
from .models import Appeal, AppealEvent, Status
from .pacing import Pacer
from .queue import rq
from .settings import RelaySettings, pacing_rules, relay_settings


def _connection(relay: RelaySettings) -> RelayConnection:
    return RelayConnection(
        relay,
        loopback_only=current_app.config["MAIL_LOOPBACK_ONLY"],
        max_emails=current_app.config.get("MAIL_MAX_EMAILS"),
    )


def send_confirmation(appeal_id: int) -> None:
    """Send the supporter a fresh confirmation link. Never paced."""
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
            db.session.add(
                AppealEvent(
                    appeal_id=appeal.id,
                    from_status=Status.AWAITING_CONFIRMATION,
                    to_status=Status.FAILED,
                    reason=reason,
                )
            )
        else:
            appeal.next_attempt_at = utcnow() + backoff(appeal.attempts)
        appeal.status_reason = f"confirmation e-mail: {reason}"
        db.session.commit()
        raise
    appeal.confirmation_sent_at = utcnow()
    appeal.attempts = 0
    appeal.next_attempt_at = None
    appeal.status_reason = None
    db.session.commit()


def _prepare(appeals: list[Any], relay: RelaySettings, batch: Batch) -> deque[tuple[Any, Outgoing]]:
    """Render every appeal of the batch; those whose buckets are empty wait instead."""
    pacer = Pacer(rq.connection(), pacing_rules())
    diplomats: dict[tuple[str, str], list[Any]] = {}
    paced_positions: dict[str, int] = {}
    ready: deque[tuple[Any, Outgoing]] = deque()
    for appeal in appeals:
        campaign = get_campaign(appeal.campaign)
        key = (appeal.campaign, appeal.country)
        if key not in diplomats:
            diplomats[key] = diplomats_for(campaign, appeal.country)
        try:
            outgoing = appeal_message(appeal, relay, diplomats=diplomats[key])
        except Exception as exc:  # noqa: BLE001 - one bad letter must not stop the batch
            current_app.logger.exception("appeal %s: the letter could not be rendered", appeal.id)
            batch.failed(appeal, f"the letter could not be rendered: {exc!r}", permanent=True)
            continue
        wait = pacer.wait_for(outgoing.recipients, campaign.to.timezone, utcnow())
        if wait:
            # Spread the waiting appeals over the coming slots instead of waking
            # them all at once for one token.
            bucket, rate = pacer.tightest(outgoing.recipients)
            position = paced_positions.get(bucket, 0)
            paced_positions[bucket] = position + 1
            batch.paced(appeal, wait + position / rate)
        else:
            ready.append((appeal, outgoing))
    return ready


def deliver_appeals(appeal_ids: list[int]) -> dict[str, int]:
    """Send a batch of appeals over one relay session and record each outcome."""
    job = get_current_job()
    job_id = job.id if job is not None else "direct-" + secrets.token_hex(8)
    appeals = claim([int(i) for i in appeal_ids], job_id)
    if not appeals:
        return {"claimed": 0}
    relay = relay_settings()
    batch = Batch(job_id)
    connection = _connection(relay)
    try:
        ready = _prepare(appeals, relay, batch)
        outgoing = {appeal.id: message for appeal, message in ready}
        failures_in_a_row = 0
        while ready:
            progress, reason, retry = False, "", []
            for appeal, result in connection.send_stream(_drain(ready)):
                if isinstance(result, SendResult):
                    batch.sent(appeal, outgoing[appeal.id], result.refused)
                    progress = True
                elif is_session_error(result):
                    reason = classify(result)[1]
                    retry.append((appeal, outgoing[appeal.id]))
                else:
                    _refused(batch, appeal, result)
                if batch.due():
                    batch.flush()
            # The session ended: the relay's per-session limit, a 421, a dropped or
            # refused connection. Reconnect and go on, unless two sessions in a row
            # got nothing through: then the relay is down for now, which is not the
            # appeals' fault, so these attempts do not count against them.
            ready.extendleft(reversed(retry))
            failures_in_a_row = 0 if progress else failures_in_a_row + 1
            if failures_in_a_row >= 2:
                for appeal, _ in ready:
                    batch.relay_unavailable(appeal, reason)
                break
    finally:
        connection.close()
        try:
            batch.flush()
        finally:
            batch.journal.close()
    return {"claimed": len(appeals), **batch.counts}


def _drain(ready: deque[tuple[Any, Outgoing]]) -> Any:
    while ready:
        yield ready.popleft()


def _refused(batch: Batch, appeal: Any, exc: BaseException) -> None:
    permanent, reason = classify(exc)
    report = None
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        report = {r: [c, m.decode("utf-8", "replace")] for r, (c, m) in exc.recipients.items()}
    batch.failed(appeal, reason, permanent, report)
