"""The worker runs the engine's own jobs and nothing else, whoever writes to Redis.
Real worker processes on a real Redis."""

from __future__ import annotations

from faults import finished, start_worker, worker_env
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer


def _env(app, backend, database_urls, redis_url, smtp, tmp_path):
    return worker_env(database_urls[backend], redis_url, smtp.port, tmp_path / "instance")


def test_a_foreign_function_is_refused_and_never_runs(
    app, backend, database_urls, redis, redis_url, smtp, tmp_path
):
    target = tmp_path / "made-by-an-attacker"
    queue = Queue("appeals", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("os.makedirs", str(target))
    worker = start_worker(_env(app, backend, database_urls, redis_url, smtp, tmp_path), burst=True)
    finished(worker, 60)

    assert not target.exists()
    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert job.id in queue.failed_job_registry.get_job_ids()
    assert "is not one of the engine's jobs" in (job.latest_result().exc_string or "")
    log = worker.log.read_text()  # type: ignore[attr-defined]
    assert f"refused job {job.id} from queue appeals: function 'os.makedirs'" in log


def test_a_foreign_callback_on_our_own_function_is_refused_too(
    app, backend, database_urls, redis, redis_url, smtp, tmp_path
):
    """RQ imports and calls a job's callbacks too; a job that names any is not run
    (run, this one would have succeeded: it delivers nothing)."""
    queue = Queue("appeals", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue(
        "campaign.delivery.jobs.deliver_appeals",
        [],
        on_failure=Callback("os.makedirs"),
        on_success=Callback("os.makedirs"),
    )
    worker = start_worker(_env(app, backend, database_urls, redis_url, smtp, tmp_path), burst=True)
    finished(worker, 60)
    job = Job.fetch(job.id, connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert "jobs with callbacks are not run" in (job.latest_result().exc_string or "")
