"""``make run`` on a machine with nothing configured: the embedded broker, SQLite, the
local mail capture, gunicorn, the workers and the dispatcher, as a newcomer starts them.
A supporter's appeal goes all the way to the capture; the first admin signs in."""

from __future__ import annotations

import email
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from email import policy
from pathlib import Path

from conftest import ROOT, free_port
from helpers import confirmation_token, supporter


def _captured(instance: Path) -> list[email.message.EmailMessage]:
    folder = instance / "mail-capture" / "new"
    if not folder.is_dir():
        return []
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def _wait(condition, timeout: float = 60):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


def _post(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_make_run_starts_everything_with_nothing_configured(tmp_path):
    instance = tmp_path / "instance"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAIL_", "DATABASE_", "REDIS_", "SECRET_", "PUBLIC_", "TEST_"))
    }
    env.update(
        INSTANCE_PATH=str(instance),
        PORT=str(port),
        BROKER_PORT=str(free_port()),
        MAIL_CAPTURE_PORT=str(free_port()),
    )
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "campaign.devstack"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        text = _wait(lambda: "Ctrl-C stops everything" in (t := log.read_text()) and t)
        found = re.search(r"log in as (\S+) with password (\S+)", text)
        assert found, text
        base = f"http://127.0.0.1:{port}"
        status, _ = _post(
            f"{base}/api/v1/campaigns/pavlov-extradition/appeals",
            supporter(email="newcomer@example.org"),
        )
        assert status == 202
        [confirmation] = _wait(lambda: _captured(instance))
        assert confirmation["To"].addresses[0].addr_spec == "newcomer@example.org"
        token = confirmation_token(confirmation.get_body(("plain",)).get_content())
        assert f"{base}/confirm/{token}" in confirmation.get_body(("plain",)).get_content()
        status, body = _post(f"{base}/api/v1/confirm/{token}")
        assert status == 200 and body["status"] == "queued"
        messages = _wait(lambda: len(m := _captured(instance)) == 2 and m)
        assert messages[1]["To"].addresses[0].addr_spec == "ministro@mju.es"
        # The instance holds the database, the secret key and the capture: owner only.
        assert (instance / "appeals.db").stat().st_mode & 0o077 == 0
        assert (instance / "secret_key").stat().st_mode & 0o077 == 0
        assert token not in log.read_text()  # gunicorn's access log is on stdout
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C, as the terminal sends it
        stack.wait(timeout=60)
    text = log.read_text()
    assert stack.returncode == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
