"""A second ``make run`` on the same machine never shares the first one's broker or mail
capture: a port held by a server that is not this instance's own is a clear error."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis

from conftest import ROOT, free_port


def _env(tmp_path: Path, **ports: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("MAIL_", "DATABASE_", "REDIS_", "SECRET_", "PUBLIC_", "TEST_", "BROKER_", "EMBEDDED_")
        )
    }
    env.update(
        INSTANCE_PATH=str(tmp_path / "instance"),
        PORT=str(ports.get("web", free_port())),
        EMBEDDED_REDIS_PORT=str(ports.get("broker", free_port())),
        MAIL_CAPTURE_PORT=str(ports.get("capture", free_port())),
    )
    return env


def _make_run(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "campaign.devstack"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _listener() -> socket.socket:
    """A foreign server: something listening that is not ours."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


def test_a_foreign_redis_on_the_broker_port_is_not_reused(tmp_path, redis_url):
    """The first landing reused whatever answered on 6390: here, the tests' own Redis."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    marker = f"devstack-ports-{time.monotonic_ns()}"
    foreign = Redis.from_url(redis_url)
    foreign.set(marker, "untouched")
    result = _make_run(_env(tmp_path, broker=port))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} (the embedded broker) is already in use" in result.stdout
    assert "EMBEDDED_REDIS_PORT=" in result.stdout
    assert "open http" not in result.stdout  # nothing started
    assert foreign.get(marker) == b"untouched"
    assert not foreign.exists("rq:queues")  # no worker of this stack ever came to it
    foreign.delete(marker)


@pytest.mark.parametrize(
    ("part", "setting", "what"),
    [
        ("capture", "MAIL_CAPTURE_PORT", "the mail capture"),
        ("web", "PORT", "the web app"),
        ("broker", "EMBEDDED_REDIS_PORT", "the embedded broker"),
    ],
)
def test_a_port_clash_is_a_clear_error(tmp_path, part, setting, what):
    with _listener() as server:
        port = server.getsockname()[1]
        started = time.monotonic()
        result = _make_run(_env(tmp_path, **{part: port}))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port} ({what}) is already in use by another program" in result.stdout
    assert f"{setting}=<port>" in result.stdout
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30  # before migrations or anything else start
    # Nothing was left running: the ports it would have used are free.
    assert not (tmp_path / "instance" / "broker").exists()


def test_the_instance_own_broker_left_running_is_reused(tmp_path):
    """A broker of this very instance (its data directory says so) is not a stranger."""
    port = free_port()
    data = tmp_path / "instance" / "broker"
    data.parent.mkdir(parents=True)
    broker = subprocess.Popen(
        [sys.executable, "-m", "campaign.devstack", "broker", str(port), str(data)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                Redis(port=port, socket_connect_timeout=0.5).ping()
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline
                time.sleep(0.1)
        from campaign.devstack import Stack, _own_broker

        assert _own_broker(port, data)
        assert not _own_broker(port, tmp_path / "elsewhere")
        env = _env(tmp_path, broker=port)
        old = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
        try:
            stack = Stack()
            stack.start_broker()  # no error, and no second broker started
        finally:
            os.environ.clear()
            os.environ.update(old)
        assert stack.env["REDIS_URL"] == f"redis://127.0.0.1:{port}/0"
        assert "broker" not in stack.procs
    finally:
        broker.terminate()
        broker.wait(timeout=10)
