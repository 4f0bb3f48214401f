"""Pooled database connections: an idle one that the database dropped is replaced before
a request uses it; one in steady use is not pinged. Real PostgreSQL."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from campaign import db as db_module
from helpers import APPEALS_URL, supporter


def _terminate_others(url: str) -> int:
    """What a PostgreSQL restart or a firewall's idle timeout does to the app's pool."""
    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).all()
            )
    finally:
        admin.dispose()


def test_an_idle_connection_the_database_dropped_is_replaced(
    app, client, database_urls, monkeypatch
):
    if "postgresql" not in database_urls:
        pytest.skip("PostgreSQL is not reachable (set TEST_DATABASE_URL)")
    if app.config["SQLALCHEMY_DATABASE_URI"] != database_urls["postgresql"]:
        pytest.skip("PostgreSQL only: SQLite has no server to drop the connection")
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.2)
    assert client.post(APPEALS_URL, json=supporter(email="a@example.org")).status_code == 202
    assert _terminate_others(database_urls["postgresql"]) >= 1
    time.sleep(0.3)
    # The pooled connection is dead; the ping on checkout finds it and a new one serves.
    assert client.post(APPEALS_URL, json=supporter(email="b@example.org")).status_code == 202


def test_a_connection_in_steady_use_is_not_pinged_an_idle_one_is(app, client, monkeypatch):
    pings: list[object] = []
    real_ping = db_module.ping

    def counted(dbapi_connection: object) -> None:
        pings.append(dbapi_connection)
        real_ping(dbapi_connection)

    monkeypatch.setattr(db_module, "ping", counted)
    monkeypatch.setattr(db_module, "IDLE_PING_SECONDS", 0.5)
    for i in range(5):  # back to back: SQLAlchemy's pool_pre_ping would ping five times
        assert (
            client.post(APPEALS_URL, json=supporter(email=f"s{i}@example.org")).status_code == 202
        )
    assert pings == []
    time.sleep(0.6)
    assert client.post(APPEALS_URL, json=supporter(email="late@example.org")).status_code == 202
    assert len(pings) == 1
