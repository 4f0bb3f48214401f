"""The RQ worker class: runs the engine's own jobs, in the Flask app context, in the
worker process, and nothing else.

``SimpleWorker`` does not fork per job (forking costs ~17 ms a job here, and
Flask-RQ's own worker starts a new Python per job); batches of a few hundred
appeals make each job worth running in place. ``rq worker-pool`` runs one of
these per core and replaces any that dies:

    rq worker-pool -n 2 -w campaign.worker.AppWorker -S json -u $REDIS_URL \
        supporters appeals receipts

The queues are served in that order (:data:`~campaign.delivery.queue.QUEUES`). A worker
started with the first landing's ``supporters appeals`` adds ``receipts`` itself, last,
so that no receipt waits for a worker that will never come.

Anyone who can write to Redis can queue a job naming any importable function, and
RQ would import and call it. This worker refuses every job whose function (or
callback) is not one of :data:`~campaign.delivery.queue.JOBS`: the refusal is
logged and the job is failed without being run.
"""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue

from .delivery.queue import APPEALS, JOBS, RECEIPTS, SUPPORTERS


class ForeignJob(Exception):
    """A job that names a function the engine does not run."""


def refusal(job: Job) -> str | None:
    """Why ``job`` must not run, or None if it is one of ours. Reads names only:
    nothing the job names is imported."""
    try:
        func = job.func_name
    except Exception as exc:  # noqa: BLE001 - undecodable data is refused, not run
        return f"unreadable job data ({type(exc).__name__})"
    if func not in JOBS:
        return f"function {func!r} is not one of the engine's jobs"
    callbacks = (
        job._success_callback_name,
        job._failure_callback_name,
        job._stopped_callback_name,
    )
    if any(callbacks):
        return "jobs with callbacks are not run"
    return None


def with_receipts(queues: Any) -> Any:
    """The queues a worker is given, with ``receipts`` added last where it serves the
    supporters' or the appeals' queue without it (a command line from before receipts had
    a queue of their own). Anything else is left as it is."""
    if isinstance(queues, (str, Queue)):
        queues = [queues]
    names = [q if isinstance(q, str) else q.name for q in queues]
    if RECEIPTS in names or not {SUPPORTERS, APPEALS} & set(names):
        return queues
    return [*queues, RECEIPTS]


class AppWorker(SimpleWorker):
    """A non-forking worker that runs the engine's jobs inside the application context.

    The application is built when the worker starts, not at its first job: building
    it takes a second here, which the first appeal after a start would wait for.
    """

    _app: Flask | None = None

    def __init__(self, queues: Any = (), *args: Any, **kwargs: Any) -> None:
        super().__init__(with_receipts(queues), *args, **kwargs)
        _ = self.app

    @property
    def app(self) -> Flask:
        if self._app is None:
            from app import create_app

            self._app = create_app()
        return self._app

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        why = refusal(job)
        if why is not None:
            self.log.error("refused job %s from queue %s: %s", job.id, queue.name, why)
            # Nothing the job names may run, not even on failure.
            job._success_callback_name = job._failure_callback_name = None
            job._stopped_callback_name = None
            job._success_callback = job._failure_callback = job._stopped_callback = None
            job.retries_left = None
            try:
                raise ForeignJob(why)
            except ForeignJob:
                self._finalize_failure(job, queue, execution, sys.exc_info())
            return False
        return super().perform_job(job, queue, execution)

    def execute_job(self, job: Job, queue: Queue) -> Any:
        with self.app.app_context():
            return super().execute_job(job, queue)
