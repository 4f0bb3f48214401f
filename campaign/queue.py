"""RQ queues, the Flask-RQ extension and enqueueing.

This module lives inside the package on purpose: a top-level ``queue`` package
would shadow the standard library's ``queue``, which ``redis`` imports.
Jobs are JSON-serialised (ids only), so a worker never unpickles data from Redis.
"""

from __future__ import annotations

from typing import Any

import flask_rq
from flask import Flask, current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

SUPPORTERS = "supporters"
"""Mail to supporters (confirmations); never stuck behind paced target mail."""
APPEALS = "appeals"
"""Appeals to the targets."""

CONFIRMATION_RETRY = Retry(max=5, interval=[10, 30, 60, 300, 900])
DELIVERY_RETRY = Retry(max=5, interval=[30, 60, 300, 900, 1800])


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


def _enqueue(queue: str, func: str, *args: Any, **kwargs: Any) -> bool:
    """Enqueue after the commit; a broker outage is logged, never raised to the supporter."""
    try:
        rq.get_queue(queue).enqueue(func, *args, **kwargs)
    except RedisError as e:
        current_app.logger.warning(
            "broker unavailable (%s); %s%s left for the sweeper", e, func, args
        )
        return False
    return True


def enqueue_confirmation(appeal_id: int) -> bool:
    return _enqueue(
        SUPPORTERS, "campaign.jobs.send_confirmation", appeal_id, retry=CONFIRMATION_RETRY
    )


def enqueue_delivery(appeal_ids: list[int]) -> bool:
    return _enqueue(APPEALS, "campaign.jobs.deliver_appeals", appeal_ids, retry=DELIVERY_RETRY)
