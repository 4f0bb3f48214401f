"""The sweeper: finds in the database every appeal that should be moving and is not.

Redis is only the transport. Whatever it loses (a restart without persistence,
``FLUSHALL``, an expired job, a worker killed mid-batch) is found again here:

* ``sending`` appeals whose batch stopped its heartbeat are recovered: those the
  relay accepted (the acceptance journal says so) are marked sent, the others
  go back to ``queued``;
* due ``queued``/``retrying`` appeals with no live job are enqueued, in batches;
* unconfirmed appeals whose confirmation mail has no live job get one again.

Run it with ``flask --app app appeals sweep`` (``make run`` starts it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, update

from . import journal
from .appeals import record
from .batches import MAX_ATTEMPTS
from .db import db, utcnow
from .models import Appeal, Status
from .queue import APPEALS, CONFIRM, DELIVER, SUPPORTERS, enqueue_many, live_jobs, new_job_id, rq

CONFIRMATION_GRACE = timedelta(seconds=30)
"""Time a new appeal's own confirmation job gets before the sweeper steps in."""

DISPATCH_LIMIT = 50_000
"""Appeals considered per sweep; the next sweep takes the rest."""


@dataclass
class SweepReport:
    recovered_sent: int = 0
    recovered_queued: int = 0
    enqueued: int = 0
    jobs: int = 0
    confirmations: int = 0
    job_ids: list[str] = field(default_factory=list)


def _recover_abandoned(report: SweepReport) -> None:
    lease = timedelta(seconds=float(current_app.config["SENDING_LEASE_SECONDS"]))
    stale = db.session.scalars(
        db.select(Appeal.id).where(
            Appeal.status == Status.SENDING, Appeal.updated_at < utcnow() - lease
        )
    ).all()
    if not stale:
        return
    redis = rq.connection()
    accepted = journal.accepted(redis, list(stale))
    now = utcnow()
    for appeal_id, message_id in accepted.items():
        db.session.execute(
            update(Appeal)
            .where(Appeal.id == appeal_id, Appeal.status == Status.SENDING)
            .values(
                status=Status.SENT,
                sent_at=now,
                message_id=message_id,
                status_reason="recorded from the acceptance journal after the worker stopped",
                next_attempt_at=None,
                updated_at=now,
            )
        )
    lost = [i for i in stale if i not in accepted]
    # An appeal whose worker keeps dying on it (it crashes the process, say) must not
    # cycle forever: after MAX_ATTEMPTS claims it fails, visibly, for a manager to see.
    doomed = set(
        db.session.scalars(
            db.select(Appeal.id).where(Appeal.id.in_(lost), Appeal.attempts >= MAX_ATTEMPTS)
        )
    )
    lost = [i for i in lost if i not in doomed]
    if doomed:
        db.session.execute(
            update(Appeal)
            .where(Appeal.id.in_(doomed), Appeal.status == Status.SENDING)
            .values(
                status=Status.FAILED,
                updated_at=now,
                status_reason=f"its worker stopped while sending it {MAX_ATTEMPTS} times",
            )
        )
    if lost:
        db.session.execute(
            update(Appeal)
            .where(Appeal.id.in_(lost), Appeal.status == Status.SENDING)
            .values(
                status=Status.QUEUED,
                job_id=None,
                next_attempt_at=None,
                updated_at=now,
                status_reason="its worker stopped before sending; queued again",
            )
        )
    record(list(accepted), Status.SENDING, Status.SENT, "acceptance journal", at=now)
    record(list(doomed), Status.SENDING, Status.FAILED, "worker stopped too often", at=now)
    record(lost, Status.SENDING, Status.QUEUED, "worker stopped", at=now)
    db.session.commit()
    journal.clear(redis, list(accepted))
    report.recovered_sent += len(accepted)
    report.recovered_queued += len(lost)


def _dispatch_due(report: SweepReport) -> None:
    now = utcnow()
    due = db.session.execute(
        db.select(Appeal.id, Appeal.job_id)
        .where(
            Appeal.status.in_((Status.QUEUED, Status.RETRYING)),
            or_(Appeal.next_attempt_at.is_(None), Appeal.next_attempt_at <= now),
        )
        .order_by(Appeal.id)
        .limit(DISPATCH_LIMIT)
    ).all()
    if not due:
        return
    live = live_jobs({job for _, job in due if job})
    orphans = [appeal_id for appeal_id, job in due if job not in live]
    size = int(current_app.config["DELIVERY_BATCH_SIZE"])
    batches = [(new_job_id(), orphans[i : i + size]) for i in range(0, len(orphans), size)]
    for job_id, ids in batches:
        db.session.execute(update(Appeal).where(Appeal.id.in_(ids)).values(job_id=job_id))
    db.session.commit()
    enqueue_many(APPEALS, DELIVER, [(job_id, ids) for job_id, ids in batches])
    report.enqueued += len(orphans)
    report.jobs += len(batches)
    report.job_ids += [job_id for job_id, _ in batches]


def _dispatch_confirmations(report: SweepReport) -> None:
    now = utcnow()
    waiting = db.session.execute(
        db.select(Appeal.id, Appeal.job_id)
        .where(
            Appeal.status == Status.AWAITING_CONFIRMATION,
            Appeal.confirmation_sent_at.is_(None),
            Appeal.created_at < now - CONFIRMATION_GRACE,
            or_(Appeal.next_attempt_at.is_(None), Appeal.next_attempt_at <= now),
        )
        .limit(DISPATCH_LIMIT)
    ).all()
    live = live_jobs({job for _, job in waiting if job})
    jobs = [(new_job_id(), appeal_id) for appeal_id, job in waiting if job not in live]
    for job_id, appeal_id in jobs:
        db.session.execute(update(Appeal).where(Appeal.id == appeal_id).values(job_id=job_id))
    db.session.commit()
    enqueue_many(SUPPORTERS, CONFIRM, jobs)
    report.confirmations += len(jobs)


def sweep() -> SweepReport:
    """One pass. Safe to run in several processes at once: claims decide who sends."""
    report = SweepReport()
    _recover_abandoned(report)
    _dispatch_due(report)
    _dispatch_confirmations(report)
    return report


def run_forever(interval: float) -> None:
    log = current_app.logger
    while True:
        started = time.monotonic()
        try:
            report = sweep()
        except Exception:  # noqa: BLE001 - a sweeper that dies recovers nothing
            db.session.rollback()
            log.exception("sweep failed; trying again")
        else:
            if (
                report.enqueued
                or report.recovered_queued
                or report.recovered_sent
                or report.confirmations
            ):
                log.warning(
                    "sweep: enqueued %d in %d jobs, %d confirmations; recovered %d sent, %d queued",
                    report.enqueued,
                    report.jobs,
                    report.confirmations,
                    report.recovered_sent,
                    report.recovered_queued,
                )
        db.session.remove()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
