"""The RQ worker class: jobs run in the Flask app context, in the worker process.

``SimpleWorker`` does not fork per job (forking costs ~17 ms a job here, and
Flask-RQ's own worker starts a new Python per job); batches of a few hundred
appeals make each job worth running in place. ``rq worker-pool`` runs one of
these per core and replaces any that dies:

    rq worker-pool -n 2 -w campaign.worker.AppWorker -S json -u $REDIS_URL supporters appeals
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue


class AppWorker(SimpleWorker):
    """A non-forking worker that runs every job inside the application context."""

    _app: Flask | None = None

    @property
    def app(self) -> Flask:
        if self._app is None:
            from app import create_app

            self._app = create_app()
        return self._app

    def execute_job(self, job: Job, queue: Queue) -> Any:
        with self.app.app_context():
            return super().execute_job(job, queue)
