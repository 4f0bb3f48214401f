"""CPU seconds by part of the stack (web, workers, dispatcher, database), read from
/proc: a figure that the other load on a shared machine disturbs far less than a rate.
Used by bench/submit.py (per submission) and bench/delivery.py (per confirmed appeal)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(p for child in out.split() for p in process_tree(int(child)))]


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone since
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    return total


def postgres_backends(database_url: str, admin_url: str) -> list[int]:
    """The server processes serving the bench's database (PostgreSQL only)."""
    if not database_url.startswith("postgresql"):
        return []
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )
            return [int(r[0]) for r in rows]
    finally:
        engine.dispose()


class CpuMeter:
    """CPU seconds used by each part from its making to :meth:`per_request_ms`."""

    def __init__(self, parts: dict[str, list[int]]) -> None:
        self.parts = parts
        self.before = {name: _cpu_seconds(pids) for name, pids in parts.items()}

    def per_request_ms(self, requests: int, more: dict[str, list[int]]) -> dict[str, float]:
        """Milliseconds per request by part; ``more`` adds processes born since (the
        database's new backends)."""
        out = {}
        for name, pids in self.parts.items():
            pids = sorted(set(pids) | set(more.get(name, [])))
            used = _cpu_seconds(pids) - self.before[name]
            out[name] = 1000 * used / max(1, requests)
        return out


def stack_meter(
    procs: dict[str, subprocess.Popen[bytes]], database_url: str, admin: str
) -> CpuMeter:
    """A meter on each process of a running stack, and on its database's backends (on
    SQLite the database's work is in the processes that use it)."""
    parts = {name: process_tree(proc.pid) for name, proc in procs.items()}
    if database_url.startswith("postgresql"):
        parts["database"] = postgres_backends(database_url, admin)
    return CpuMeter(parts)
