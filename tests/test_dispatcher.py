"""The dispatcher gathers appeals confirmed one at a time into batches that share SMTP
sessions, and sends a lone one at once. Real dispatcher and worker processes."""

from __future__ import annotations

import pytest
from faults import start_dispatcher, start_worker, stop, wait_until, worker_env

from campaign.db import db
from campaign.models import Appeal, Status
from campaign.tokens import confirmation_token
from helpers import APPEALS_URL, supporter


@pytest.fixture
def engine(app, backend, database_urls, redis_url, smtp, tmp_path):
    """A dispatcher and a worker, as ``make run`` starts them."""
    env = worker_env(database_urls[backend], redis_url, smtp.port, tmp_path / "instance")
    processes = [start_dispatcher(env), start_worker(env)]
    yield
    stop(*processes)


def _submitted(app, client, smtp, n: int) -> list[str]:
    """n appeals submitted through the API; their confirmation mails sent."""
    for i in range(n):
        assert (
            client.post(APPEALS_URL, json=supporter(email=f"s{i}@example.org")).status_code == 202
        )
    wait_until(lambda: len(smtp.received) == n, timeout=30)
    with app.app_context():
        return [confirmation_token(a) for a in db.session.scalars(db.select(Appeal))]


def _sent(app) -> int:
    with app.app_context():
        n = db.session.scalar(
            db.select(db.func.count()).select_from(Appeal).where(Appeal.status == Status.SENT)
        )
        db.session.remove()
        return int(n or 0)


def test_confirmations_one_at_a_time_share_sessions(app, client, smtp, engine):
    tokens = _submitted(app, client, smtp, 40)
    sessions_before = smtp.handler.sessions
    for token in tokens:  # forty supporters press the button, one after another
        assert client.post(f"/api/v1/confirm/{token}").status_code == 200
    wait_until(lambda: _sent(app) == 40, timeout=30)
    appeals = [m for m in smtp.received if m.rcpt_tos == ["ministro@mju.es"]]
    assert len(appeals) == 40
    # One job and one SMTP session per appeal would be 40; a batch per gathering window
    # is a handful (how many depends on how fast this machine confirms).
    assert smtp.handler.sessions - sessions_before <= 10


def test_a_lone_confirmation_leaves_without_waiting_for_company(app, client, smtp, engine):
    [token] = _submitted(app, client, smtp, 1)
    assert client.post(f"/api/v1/confirm/{token}").status_code == 200
    wait_until(lambda: _sent(app) == 1, timeout=10)
    assert smtp.received[-1].rcpt_tos == ["ministro@mju.es"]


@pytest.fixture
def slow_sweeping_engine(app, backend, database_urls, redis_url, smtp, tmp_path, monkeypatch):
    """A dispatcher that looks for lost work only once a minute, with a wide gathering
    window; this process coalesces wake-ups for a second (less than the window)."""
    from campaign.delivery import queue

    monkeypatch.setattr(queue, "WAKE_COALESCE", 1.0)
    monkeypatch.setattr(queue, "_last_wake", 0.0)
    env = worker_env(
        database_urls[backend],
        redis_url,
        smtp.port,
        tmp_path / "instance",
        SWEEP_INTERVAL="60",
        DISPATCH_WINDOW="2",
    )
    processes = [start_dispatcher(env), start_worker(env)]
    yield
    stop(*processes)


def test_a_confirmation_whose_wake_up_was_coalesced_still_leaves_at_once(
    app, client, smtp, slow_sweeping_engine
):
    first, second = _submitted(app, client, smtp, 2)
    assert client.post(f"/api/v1/confirm/{first}").status_code == 200
    wait_until(lambda: _sent(app) == 1, timeout=10)  # the dispatcher's pass came and went
    # Within a second of the first wake-up: this one sends none. The pass that follows
    # every wake-up, a window later, finds it; the next look for lost work is a minute off.
    assert client.post(f"/api/v1/confirm/{second}").status_code == 200
    wait_until(lambda: _sent(app) == 2, timeout=8)
