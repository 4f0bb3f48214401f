"""Scaling out: two workers on "two machines" (separate environments and instance folders)
share one Redis and one database, split the appeals between them, and deliver each once.
And the deployment files (compose.yaml, Containerfile, systemd units) hold together."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from faults import lost_and_duplicated, stop, wait_until, worker_env
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from campaign.db import db
from campaign.models import Appeal, Status
from conftest import ROOT

APPEALS = 300
BATCH = 10


def _start(env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    log = Path(env["INSTANCE_PATH"]) / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "rq.cli", "worker", "--name", name,
        "--worker-class", "campaign.worker.AppWorker", "--serializer", "json",
        "--url", env["REDIS_URL"], "supporters", "appeals",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=out)
    process.log = log  # type: ignore[attr-defined]
    return process


def test_two_machines_split_the_appeals_and_deliver_each_once(
    app, backend, database_urls, redis, redis_url, smtp, tmp_path
):
    from campaign.delivery.dispatcher import sweep
    from campaign.synthetic import create_synthetic

    machines = {}
    for name in ("machine-a", "machine-b"):
        env = worker_env(
            database_urls[backend],
            redis_url,
            smtp.port,
            tmp_path / name / "instance",
            HOSTNAME=name,
        )
        machines[name] = _start(env, f"{name}-worker")
    try:
        wait_until(
            lambda: (
                {w.name for w in Worker.all(connection=redis)}
                >= {"machine-a-worker", "machine-b-worker"}
            ),
            timeout=60,
            step=0.2,
        )
        with app.app_context():
            create_synthetic("pavlov-extradition", APPEALS)
            expected = set(db.session.scalars(db.select(Appeal.email)))
            app.config["DELIVERY_BATCH_SIZE"] = BATCH
            report = sweep()
            db.session.remove()
        assert report.jobs == APPEALS // BATCH

        def all_sent() -> bool:
            with app.app_context():
                n = db.session.scalar(
                    db.select(db.func.count()).where(Appeal.status == Status.SENT)
                )
                db.session.remove()
                return n == APPEALS

        wait_until(all_sent, timeout=120, step=0.2)
    finally:
        stop(*machines.values())
    for process in machines.values():
        log = process.log.read_text(errors="replace")  # type: ignore[attr-defined]
        assert "Traceback" not in log, log[-3000:]

    # Who sent what: each appeal's claiming job, and the worker RQ ran that job on.
    with app.app_context():
        claimed = list(db.session.execute(db.select(Appeal.id, Appeal.job_id)))
    assert all(job_id for _, job_id in claimed)
    by_worker: Counter[str] = Counter()
    for job_id, n in Counter(job_id for _, job_id in claimed).items():
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        by_worker[job.worker_name] += n
    assert set(by_worker) == {"machine-a-worker", "machine-b-worker"}, by_worker
    assert sum(by_worker.values()) == APPEALS
    assert min(by_worker.values()) >= BATCH  # each machine took at least a whole batch

    # Each delivered exactly once, counted at the SMTP server.
    appeals = [m for m in smtp.received if "ministro@mju.es" in m.rcpt_tos]
    assert lost_and_duplicated(expected, appeals) == (0, 0)
    assert len(appeals) == APPEALS

    # Each machine kept its own instance folder (its own secret key file, its logs).
    for name in machines:
        assert (tmp_path / name / "instance" / "worker.log").exists()


# --- The deployment files -------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_brings_up_every_part_from_one_image():
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "sweeper"} <= set(services)
    built = {
        name
        for name, s in services.items()
        if s.get("build", {}).get("dockerfile") == "Containerfile"
    }
    assert {"migrate", "web", "worker", "sweeper"} <= built
    images = {services[name]["image"] for name in built}
    assert images == {"appeal-sender:latest"}
    # Workers scale with --scale worker=N: no fixed name or host port to clash.
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][:4] == ["python", "-m", "rq.cli", "worker"]
    assert "campaign.worker.AppWorker" in worker["command"]
    assert services["sweeper"]["command"] == ["flask", "--app", "app", "appeals", "dispatch"]
    assert services["migrate"]["command"] == ["flask", "--app", "app", "db", "upgrade"]
    # Migrations before the new code.
    for name in ("web", "worker", "sweeper"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }


def test_compose_redis_persists_and_needs_a_password_from_the_environment():
    text = (ROOT / "compose.yaml").read_text()
    redis = _compose()["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "/data" in redis["volumes"][0]
    for name in ("web", "worker", "sweeper", "migrate"):
        env = _compose()["services"][name]["environment"]
        assert "${REDIS_PASSWORD:?" in env["REDIS_URL"]
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    # No secret is written in the file itself, and none in a worker's argv.
    assert not re.search(r"(PASSWORD|SECRET_KEY|TOKEN):\s+[^$\s]", text)
    assert not any("redis://" in part for part in _compose()["services"]["worker"]["command"])


def test_containerfile_copies_files_that_exist_and_runs_as_a_user():
    text = (ROOT / "Containerfile").read_text()
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"Containerfile copies {source}, which is missing"
    assert any(line.startswith("USER ") and "root" not in line for line in lines)
    assert "pip install ." in text
    assert "pybabel compile" in text
    ignored = (ROOT / ".containerignore").read_text().split()
    for private in (".env", "instance", ".git", "**/*.mo"):
        assert private in ignored
    # The image's command is the web app as make run starts it.
    from campaign.devstack import web_argv

    cmd = next(line for line in lines if line.startswith("CMD"))
    for part in ("gthread", "campaign.weblog.AccessLogger", web_argv("x")[-1]):
        assert part in cmd


@pytest.mark.parametrize(
    "unit",
    [
        "appeal-sender-web.service",
        "appeal-sender-worker@.service",
        "appeal-sender-dispatcher.service",
    ],
)
def test_systemd_units_are_hardened_and_start_a_real_command(unit):
    text = (ROOT / "deploy" / "systemd" / unit).read_text()
    settings: dict[str, list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    assert settings["EnvironmentFile"] == ["/etc/appeal-sender/env"]
    assert settings["NoNewPrivileges"] == ["true"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == ["/var/lib/appeal-sender"]
    assert settings["User"] == ["appeals"]
    [start] = settings["ExecStart"]
    argv = shlex.split(start)
    assert argv[0].startswith("/opt/appeal-sender/.venv/bin/")
    if unit.startswith("appeal-sender-worker@"):
        assert argv[1:4] == ["-m", "rq.cli", "worker"] and "%i" in start
        assert "campaign.worker.AppWorker" in argv
    elif "dispatcher" in unit:
        assert argv[1:] == ["--app", "app", "appeals", "dispatch"]
    else:
        assert "app:create_app()" in argv
        assert settings["ExecStartPre"][0].endswith("flask --app app db upgrade")
