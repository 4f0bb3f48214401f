"""RQ queues, the Flask-RQ extension, enqueueing, and the dispatcher's wake-up call.

This module lives inside a package on purpose: a top-level ``queue`` package
would shadow the standard library's ``queue``, which ``redis`` imports.
Jobs are JSON-serialised (ids only), so a worker never unpickles data from Redis,
and a worker runs no function but the ones in :data:`JOBS`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import flask_rq
from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

SUPPORTERS = "supporters"
"""Confirmation mails: a supporter waits for the link; never stuck behind target mail."""
APPEALS = "appeals"
"""Appeals to the targets."""
RECEIPTS = "receipts"
"""Receipts to supporters, served last: a flood of receipts never delays appeals (5,000
receipts once held the appeals of a burst of confirms back for six seconds)."""

QUEUES = (SUPPORTERS, APPEALS, RECEIPTS)
"""Every queue, in the order a worker serves them."""

DELIVER = "campaign.delivery.jobs.deliver_appeals"
CONFIRM = "campaign.delivery.jobs.send_confirmations"
RECEIPT = "campaign.delivery.jobs.send_receipts"

JOBS = frozenset({DELIVER, CONFIRM, RECEIPT})
"""The only functions a worker runs; a job naming any other is failed unrun."""

QUEUE_OF = {DELIVER: APPEALS, CONFIRM: SUPPORTERS, RECEIPT: RECEIPTS}
"""The queue each job goes to."""

WAKE = "appeals:wake"
"""The channel on which a confirm tells the dispatcher that something is due."""
_PUBLISH_WAKE = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$1\r\n1\r\n" % (len(WAKE), WAKE.encode())

JOB_TIMEOUT = 3600
"""Seconds a batch may run; sockets time out long before (MAIL_TIMEOUT)."""

RESULT_TTL = 300
"""Seconds a finished job's result is kept: only for the dashboard."""

_WAITING = {
    s.value for s in (JobStatus.CREATED, JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
}
"""A job in these states has not started: the appeals handed to it are still to come.
A started job claimed its appeals first thing; any of them due again (paced, retried,
recovered after its worker died) needs a new job."""


def new_job_id() -> str:
    """Ids are chosen before the commit, so the database knows its job before Redis does."""
    return uuid.uuid4().hex


class RQ(flask_rq.RQ):
    """Flask-RQ with JSON-serialised jobs on every queue and worker."""

    def init_app(self, app: Flask) -> None:  # type: ignore[override]
        super().init_app(app)
        self._queues[app] = {
            name: Queue(
                name,
                connection=q.connection,
                is_async=q._is_async,
                job_class=q.job_class,
                serializer=JSONSerializer,
            )
            for name, q in self._queues[app].items()
        }

    def make_worker(
        self, queues: list[str] | tuple[str, ...] | None = None, **kwargs: Any
    ) -> BaseWorker:
        kwargs.setdefault("serializer", JSONSerializer)
        return super().make_worker(queues, **kwargs)

    def connection(self) -> Redis:
        return self.get_queue(APPEALS).connection


rq = RQ()


WAKE_COALESCE = 0.05
"""Seconds after a wake-up during which this process sends no other: the dispatcher
passes again a window (0.2 s) after each wake-up, and finds those appeals then."""

_last_wake = 0.0


def wake_dispatcher() -> None:
    """Tell the dispatcher that an appeal became due, after the commit: one PUBLISH,
    which costs nothing when no dispatcher listens, and none at all when this process
    sent one less than :data:`WAKE_COALESCE` ago (under a spike of confirms, a round
    trip to Redis saved on most). A broker outage is logged, never raised to the
    supporter: the dispatcher's next pass finds the appeal anyway."""
    global _last_wake
    now = time.monotonic()
    if now - _last_wake < WAKE_COALESCE:
        return
    _last_wake = now
    try:
        pool = rq.connection().connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([_PUBLISH_WAKE], check_health=False)
            connection.read_response()
        except BaseException:
            connection.disconnect()  # never back to the pool half-read
            raise
        finally:
            pool.release(connection)
    except RedisError as e:
        current_app.logger.warning("broker unavailable (%s); the dispatcher will find it", e)


class Alarm:
    """The dispatcher's side: a subscription that rings when something became due.
    A wake-up sent while the dispatcher was busy waits in the subscription."""

    def __init__(self, redis: Redis) -> None:
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(WAKE)

    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout`` seconds pass; True if woken. Drains every
        wake-up already waiting: one pass serves them all."""
        woken = self.pubsub.get_message(timeout=max(timeout, 0.0)) is not None
        while self.pubsub.get_message(timeout=0) is not None:
            woken = True
        return woken

    def close(self) -> None:
        self.pubsub.close()


def enqueue_many(queue: str, func: str, jobs: list[tuple[str, object]]) -> None:
    """Enqueue (job id, argument) pairs in one round trip per 500."""
    q = rq.get_queue(queue)
    for start in range(0, len(jobs), 500):
        q.enqueue_many(
            [
                Queue.prepare_data(
                    func, args=(arg,), job_id=job_id, timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL
                )
                for job_id, arg in jobs[start : start + 500]
            ]
        )


def waiting_jobs(job_ids: set[str]) -> set[str]:
    """The ids among ``job_ids`` whose job still waits in Redis to be run."""
    if not job_ids:
        return set()
    ids = sorted(job_ids)
    connection = rq.connection()
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = pipe.execute()
    return {
        i for i, s in zip(ids, statuses, strict=True) if s is not None and s.decode() in _WAITING
    }
