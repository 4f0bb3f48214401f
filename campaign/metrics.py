"""What ``/metrics`` tells Prometheus: the state of the appeals, read from the database at
scrape time, the queues, read from Redis, and the web's request latency.

The database is the source of truth, and it is the one thing every process shares: the
workers may run on other machines, whose counters this process could never see. So
deliveries, relay replies and pacing waits are read from ``appeal_recipients``, a few
``GROUP BY`` queries per scrape, and the delivery engine writes no metric at all.

Under gunicorn each web process keeps its own latency histogram. With
``PROMETHEUS_MULTIPROC_DIR`` set (``make run`` and the container set it), prometheus_client
keeps them in files there and a scrape sums every process's; the directory must be
emptied before the server starts (``make run`` does it).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, text

from .db import db, utcnow
from .models import Appeal, Delivery, Recipient

_OWN = CollectorRegistry(auto_describe=True)
"""This process's own metrics, when there is no multiprocess directory."""

REQUEST_LATENCY = Histogram(
    "appeals_http_request_duration_seconds",
    "Time to answer a request, by endpoint (never by URL: URLs carry tokens).",
    ("endpoint", "method", "status"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=_OWN,
)

REPLY_CLASSES = ("2xx", "4xx", "5xx")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _reply_class(reply: str | None) -> str | None:
    if not reply:
        return None
    first = reply.lstrip()[:1]
    return f"{first}xx" if first in ("2", "4", "5") else None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower() or "unknown"


class DatabaseCollector:
    """Appeals, copies and queues, read when Prometheus asks. Counts only: no names,
    no addresses but the targets' domains."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        appeals = GaugeMetricFamily(
            "appeals", "Appeals by campaign and status.", labels=("campaign", "status")
        )
        for campaign, status, n in db.session.execute(
            db.select(Appeal.campaign, Appeal.status, func.count()).group_by(
                Appeal.campaign, Appeal.status
            )
        ):
            appeals.add_metric((campaign, status), n)
        yield appeals

        copies = GaugeMetricFamily(
            "appeals_deliveries",
            "Addressees' copies of appeals by state (accepted by the relay, pending, failed).",
            labels=("status",),
        )
        by_status = dict.fromkeys(Delivery.ALL, 0)
        replies: Counter[str] = Counter(dict.fromkeys(REPLY_CLASSES, 0))
        # One pass: the reply's first character is its class.
        first = func.substr(Recipient.last_reply, 1, 1)
        for status, digit, n in db.session.execute(
            db.select(Recipient.status, first, func.count()).group_by(Recipient.status, first)
        ):
            by_status[status] = by_status.get(status, 0) + n
            kind = _reply_class(digit)
            if kind:
                replies[kind] += n
        for status, n in sorted(by_status.items()):
            copies.add_metric((status,), n)
        yield copies

        relay = GaugeMetricFamily(
            "appeals_relay_replies",
            "Copies whose last reply from the relay was of this class.",
            labels=("class",),
        )
        for kind in REPLY_CLASSES:
            relay.add_metric((kind,), replies[kind])
        yield relay

        pacing = GaugeMetricFamily(
            "appeals_pacing_waits",
            "Copies waiting for their turn at a receiving domain (pacing or a retry).",
            labels=("domain",),
        )
        waiting: Counter[str] = Counter()
        for address, n in db.session.execute(
            db.select(Recipient.address, func.count())
            .where(Recipient.status == Delivery.PENDING, Recipient.next_attempt_at > utcnow())
            .group_by(Recipient.address)
        ):
            waiting[_domain(address)] += n
        for domain, n in sorted(waiting.items()):
            pacing.add_metric((domain,), n)
        yield pacing

        oldest = db.session.scalar(
            db.select(func.min(Appeal.updated_at)).where(text("status IN ('queued', 'retrying')"))
        )
        due_age = GaugeMetricFamily(
            "appeals_oldest_due_age_seconds",
            "Age of the oldest appeal waiting to be sent (queued or retrying), 0 if none.",
        )
        due_age.add_metric((), _age(oldest))
        yield due_age
        db.session.rollback()  # end the read transaction

        yield from _queues(self.app)


def _age(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


def _queues(app: Flask) -> Iterator[Metric]:
    from .delivery.queue import rq

    depth = GaugeMetricFamily(
        "appeals_queue_jobs", "Jobs waiting in an RQ queue.", labels=("queue",)
    )
    age = GaugeMetricFamily(
        "appeals_queue_oldest_age_seconds",
        "Age of the oldest job waiting in an RQ queue, 0 if none.",
        labels=("queue",),
    )
    up = GaugeMetricFamily("appeals_broker_up", "1 if Redis answered this scrape.")
    try:
        redis = rq.connection()
        for name in app.config["RQ_QUEUES"]:
            key = f"rq:queue:{name}"
            depth.add_metric((name,), redis.llen(key))
            head = redis.lindex(key, 0)
            enqueued = redis.hget(f"rq:job:{head.decode()}", "enqueued_at") if head else None
            age.add_metric((name,), _age(_parse(enqueued)))
        up.add_metric((), 1)
    except Exception:  # noqa: BLE001 - a scrape reports the broker down, it does not fail
        up.add_metric((), 0)
    else:
        yield depth
        yield age
    yield up


def _parse(value: bytes | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.decode().replace("Z", "+00:00"))
    except ValueError:
        return None


class _Processes:
    """Every web process's request metrics (or this one's, outside gunicorn)."""

    def collect(self) -> Iterator[Metric]:
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            yield from registry.collect()
        else:
            yield from _OWN.collect()


def exposition(app: Flask) -> Response:
    """The whole scrape, in Prometheus's text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Processes())  # type: ignore[arg-type]
    registry.register(DatabaseCollector(app))  # type: ignore[arg-type]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Time every request, labelled by its endpoint (a route's name), never its URL."""

    @app.before_request
    def _start() -> None:
        g._metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("_metrics_started", None)
        if started is not None:
            REQUEST_LATENCY.labels(
                request.endpoint or "unmatched",
                request.method if request.method in _METHODS else "other",
                f"{response.status_code // 100}xx",
            ).observe(time.perf_counter() - started)
        return response


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
