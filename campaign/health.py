"""``/healthz``, ``/readyz`` and ``/metrics``: for a load balancer, an orchestrator and
Prometheus. None of them carries personal data, opens a session or counts against a
rate limit (see :mod:`campaign.views`).

``/metrics`` is not public (it shows how a campaign is going): with ``METRICS_TOKEN`` set
it answers only to ``Authorization: Bearer <token>``; without, only to a client on
loopback. Behind a proxy, set ``TRUSTED_PROXIES`` so that the client is the real one,
not the proxy on 127.0.0.1, or set a token.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, current_app, jsonify, request
from redis import Redis
from sqlalchemy import text

from . import metrics
from .db import db

bp = Blueprint("health", __name__)

ENDPOINTS = frozenset({"health.healthz", "health.readyz", "health.metrics"})
"""Endpoints that need no session and no rate limit."""

PATHS = ("/healthz", "/readyz", "/metrics")

PROBE_TIMEOUT = 2.0
"""Seconds /readyz waits for Redis before it calls it down."""


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive and answers."""
    return jsonify(status="ok")


def _broker() -> Redis:
    redis = current_app.extensions.get("readyz_redis")
    if redis is None:
        redis = Redis.from_url(
            current_app.config["REDIS_URL"],
            socket_timeout=PROBE_TIMEOUT,
            socket_connect_timeout=PROBE_TIMEOUT,
        )
        current_app.extensions["readyz_redis"] = redis
    return redis


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The process can serve: the database and Redis answer."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        db.session.rollback()
        checks["database"] = f"unavailable ({type(exc).__name__})"
    try:
        _broker().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["redis"] = f"unavailable ({type(exc).__name__})"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ready" if ready else "unavailable", checks=checks), (
        200 if ready else 503
    )


def _allowed() -> tuple[bool, int]:
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), str(token).encode()
        )
        return ok, 401
    try:
        loopback = ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        loopback = False
    return loopback, 403


def metrics_view() -> Response | tuple[Response, int]:
    allowed, code = _allowed()
    if not allowed:
        response = jsonify(
            error="unauthorized" if code == 401 else "forbidden",
            message="metrics need a bearer token"
            if code == 401
            else "metrics answer only to loopback; set METRICS_TOKEN for remote scrapes",
        )
        if code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, code
    return metrics.exposition(current_app._get_current_object())  # type: ignore[attr-defined]


bp.add_url_rule("/metrics", endpoint="metrics", view_func=metrics_view)
