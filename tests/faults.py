"""Helpers for the delivery engine's fault tests: real worker processes, a slow or
scripted SMTP server, and counting what arrived."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Received

ROOT = Path(__file__).resolve().parent.parent
_REPLY_TO = re.compile(rb"^Reply-To:[^<]*<([^>]+)>", re.MULTILINE)  # folded or not


def worker_env(
    database_url: str, redis_url: str, smtp_port: int, instance: Path, **extra: str
) -> dict[str, str]:
    """The environment a worker process on another machine would have."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "PACING_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(smtp_port),
            "MAIL_LOOPBACK_ONLY": "true",
            "MAIL_DEFAULT_SENDER": "appeals@amnesty.test",
            "MAIL_TIMEOUT": "5",
            "ORG_NAME": "Amnesty Test Section",
            "SECRET_KEY": "test-secret-key",
            "INSTANCE_PATH": str(instance),
            "PACING_ENABLED": "false",
        }
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], burst: bool = False) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--worker-class",
        "campaign.worker.AppWorker",
        "--serializer",
        "json",
        "--url",
        env["REDIS_URL"],
        "--quiet",
        "supporters",
        "appeals",
    ]
    if burst:
        argv.append("--burst")
    log = Path(env["INSTANCE_PATH"]) / f"worker-{time.monotonic_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=out)
    process.log = log  # type: ignore[attr-defined]
    return process


def start_dispatcher(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``flask --app app appeals dispatch``, as ``make run`` starts it."""
    log = Path(env["INSTANCE_PATH"]) / f"dispatcher-{time.monotonic_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app", "appeals", "dispatch"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    process.log = log  # type: ignore[attr-defined]
    return process


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def finished(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a burst worker; fail with the end of its log if it did not exit cleanly."""
    code = process.wait(timeout=timeout)
    assert code == 0, process.log.read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]


def wait_until(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def deliveries(received: list[Received]) -> Counter[str]:
    """How many times each supporter's appeal arrived, keyed by Reply-To address."""
    counts: Counter[str] = Counter()
    for item in received:
        found = _REPLY_TO.search(item.data)
        if found:
            counts[found.group(1).decode()] += 1
    return counts


def lost_and_duplicated(expected: set[str], received: list[Received]) -> tuple[int, int]:
    counts = deliveries(received)
    lost = len(expected - set(counts))
    duplicated = sum(n - 1 for address, n in counts.items() if address in expected)
    return lost, duplicated
