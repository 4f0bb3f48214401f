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


def test_a_worker_serves_receipts_last_even_with_the_first_landings_command_line(
    app, backend, database_urls, redis, redis_url, smtp, tmp_path
):
    """Receipts have a queue of their own, served after the appeals: a flood of receipts
    never holds letters to the targets back. ``start_worker`` names only ``supporters
    appeals`` (the first landing's command line): the worker adds ``receipts`` itself."""
    receipts = Queue("receipts", connection=redis, serializer=JSONSerializer)
    appeals = Queue("appeals", connection=redis, serializer=JSONSerializer)
    # Queued first, so that only the order of the queues can put the appeals ahead.
    receipt = receipts.enqueue("campaign.delivery.jobs.send_receipts", [])
    batch = appeals.enqueue("campaign.delivery.jobs.deliver_appeals", [])
    worker = start_worker(_env(app, backend, database_urls, redis_url, smtp, tmp_path), burst=True)
    finished(worker, 60)
    receipt = Job.fetch(receipt.id, connection=redis, serializer=JSONSerializer)
    batch = Job.fetch(batch.id, connection=redis, serializer=JSONSerializer)
    assert receipt.get_status() == batch.get_status() == JobStatus.FINISHED
    assert batch.ended_at <= receipt.started_at


def test_the_receipts_queue_is_added_only_to_an_application_worker(redis):
    from campaign.worker import with_receipts

    assert with_receipts(["supporters", "appeals"]) == ["supporters", "appeals", "receipts"]
    assert with_receipts("appeals") == ["appeals", "receipts"]
    assert with_receipts(["receipts", "appeals"]) == ["receipts", "appeals"]  # as asked
    assert with_receipts(["other"]) == ["other"]
    assert with_receipts([]) == []
    queue = Queue("supporters", connection=redis)
    assert with_receipts([queue]) == [queue, "receipts"]
