"""/healthz, /readyz and /metrics (campaign/health.py, campaign/metrics.py), and the JSON
logs (campaign/logs.py): real database, real Redis, a real SMTP server."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from campaign import logs
from conftest import _base_config, free_port, fresh_app
from helpers import APPEALS_URL, confirmation_token, supporter

SUPPORTERS = [
    supporter(name=f"Zofia Quixbert{i}", email=f"zofia.quixbert{i}@example.org") for i in range(3)
]


def _sample(body: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition, None if absent."""
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if line.startswith(name + "{") and found != labels:
            continue
        if line.startswith(name + " ") and labels:
            continue
        return float(line.rsplit(" ", 1)[1])
    return None


def _send_all(app, client, smtp, work) -> list[str]:
    """Three appeals submitted, confirmed and delivered; returns their confirm tokens."""
    for data in SUPPORTERS:
        assert client.post(APPEALS_URL, json=data).status_code == 202
    work()
    tokens = [
        confirmation_token(m.message.get_body(("plain",)).get_content()) for m in smtp.received
    ]
    assert len(tokens) == 3
    for token in tokens[:2]:  # two confirm, one does not
        assert client.post(f"/api/v1/confirm/{token}").status_code == 200
    work()
    return tokens


# --- /healthz and /readyz ------------------------------------------------------------------


def test_healthz_answers_json_without_a_session(client):
    reply = client.get("/healthz")
    assert reply.status_code == 200
    assert reply.get_json() == {"status": "ok"}
    assert "Set-Cookie" not in reply.headers


def test_readyz_checks_the_database_and_redis(client):
    reply = client.get("/readyz")
    assert reply.status_code == 200, reply.get_data(as_text=True)
    assert reply.get_json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
    assert "Set-Cookie" not in reply.headers


def test_readyz_is_503_when_redis_does_not_answer(database_urls, smtp):
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    config = _base_config(database_urls["sqlite"], dead, smtp.port)
    config["RATELIMIT_ENABLED"] = False
    with fresh_app(config) as app:
        reply = app.test_client().get("/readyz")
    assert reply.status_code == 503
    body = reply.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("unavailable")
    assert "127.0.0.1" not in json.dumps(body)  # no URL, no password, only the error's class


def test_probes_are_not_rate_limited(app, client):
    app.config["RATELIMIT_ENABLED"] = True
    for _ in range(300):
        assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


# --- /metrics: who may read it --------------------------------------------------------------


def test_metrics_answer_loopback_without_a_token(client):
    reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert reply.status_code == 200
    assert reply.mimetype == "text/plain"
    reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"})
    assert reply.status_code == 200


def test_metrics_refuse_a_remote_client_without_a_token(client):
    reply = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"})
    assert reply.status_code == 403
    assert reply.get_json()["error"] == "forbidden"
    assert b"appeals" not in reply.data.replace(b"appeals_", b"")


def test_metrics_behind_a_proxy_see_the_real_client(database_urls, redis_url, smtp):
    config = _base_config(database_urls["sqlite"], redis_url, smtp.port)
    config["TRUSTED_PROXIES"] = 1
    with fresh_app(config) as app:
        client = app.test_client()
        # The proxy is on loopback; the client it forwards is not.
        remote = client.get(
            "/metrics",
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
            headers={"X-Forwarded-For": "198.51.100.4"},
        )
        local = client.get(
            "/metrics",
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
            headers={"X-Forwarded-For": "127.0.0.1"},
        )
    assert remote.status_code == 403
    assert local.status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong-token",
        "Bearer s3cret-metrics-token-but-longer",
        "Basic czNjcmV0LW1ldHJpY3MtdG9rZW4=",
        "bearer",
        "Bearer s3cret-metrics-token\r\nX-Injected: 1",
        "Bearer " + "x" * 100_000,
    ],
)
def test_metrics_with_a_token_need_it_even_from_loopback(app, client, header):
    app.config["METRICS_TOKEN"] = "s3cret-metrics-token"
    headers = {"Authorization": header} if header is not None else {}
    try:
        reply = client.get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"})
    except ValueError:  # Werkzeug's test client refuses a header with a newline itself
        assert header is not None and "\n" in header
        return
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert "s3cret" not in reply.get_data(as_text=True)


def test_metrics_with_the_right_token_answer_anyone(app, client):
    app.config["METRICS_TOKEN"] = "s3cret-metrics-token"
    reply = client.get(
        "/metrics",
        headers={"Authorization": "Bearer s3cret-metrics-token"},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert reply.status_code == 200
    assert "appeals_broker_up 1.0" in reply.get_data(as_text=True)


# --- /metrics: what it says -----------------------------------------------------------------


def test_metrics_count_appeals_deliveries_and_replies_without_personal_data(
    app, client, smtp, work
):
    tokens = _send_all(app, client, smtp, work)
    body = client.get("/metrics").get_data(as_text=True)
    campaign = "pavlov-extradition"
    assert _sample(body, "appeals", campaign=campaign, status="sent") == 2
    assert _sample(body, "appeals", campaign=campaign, status="awaiting_confirmation") == 1
    accepted = _sample(body, "appeals_deliveries", status="accepted")
    assert accepted is not None and accepted >= 2  # the minister's copy of each, at least
    assert _sample(body, "appeals_relay_replies", **{"class": "2xx"}) == accepted
    assert _sample(body, "appeals_relay_replies", **{"class": "5xx"}) == 0
    assert _sample(body, "appeals_queue_jobs", queue="appeals") == 0
    assert _sample(body, "appeals_queue_oldest_age_seconds", queue="appeals") == 0
    assert _sample(body, "appeals_broker_up") == 1
    # Latency by endpoint: the confirm is there, its URL (and token) are not.
    count = _sample(
        body,
        "appeals_http_request_duration_seconds_count",
        endpoint="api.confirm",
        method="POST",
        status="2xx",
    )
    assert count is not None and count >= 2
    for secret in [*tokens, "Quixbert", "example.org", "ana@", "/confirm/"]:
        assert secret not in body


def test_metrics_show_a_refusal_and_a_waiting_job(app, client, smtp, work, redis):
    from campaign.delivery.queue import APPEALS, DELIVER, enqueue_many, new_job_id

    smtp.handler.rcpt_replies["ministro@mju.es"] = "550 5.1.1 No such user"
    _send_all(app, client, smtp, work)
    with app.app_context():
        enqueue_many(APPEALS, DELIVER, [(new_job_id(), [999_999])])
    body = client.get("/metrics").get_data(as_text=True)
    assert _sample(body, "appeals_relay_replies", **{"class": "5xx"}) >= 2
    assert _sample(body, "appeals", campaign="pavlov-extradition", status="failed") == 2
    assert _sample(body, "appeals_queue_jobs", queue="appeals") == 1
    age = _sample(body, "appeals_queue_oldest_age_seconds", queue="appeals")
    assert age is not None and 0 <= age < 60


# --- JSON logs ------------------------------------------------------------------------------


@pytest.fixture
def json_log():
    """Everything logged at INFO and above, through the JSON formatter."""
    stream = io.StringIO()
    root = logging.getLogger()
    handler = logs.json_handler(stream)
    # aiosmtpd's "mail.log" is the test's own SMTP server, running in this process.
    handler.addFilter(lambda record: not record.name.startswith("mail.log"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_extras(json_log):
    log = logging.getLogger("campaign.test")
    log.info("first line\nsecond line\r\n%s", "<b>é\u202e</b>", extra={"appeals": 3, "job": "j1"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    lines = json_log.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message", "appeals", "job"}
    assert first["message"] == "first line\nsecond line\r\n<b>é\u202e</b>"
    assert (first["level"], first["logger"], first["appeals"]) == ("INFO", "campaign.test", 3)
    assert second["level"] == "ERROR" and "RuntimeError: boom" in second["exception"]


def test_info_logs_of_a_whole_delivery_name_no_supporter(app, client, smtp, work, json_log):
    _send_all(app, client, smtp, work)
    text = json_log.getvalue()
    assert text, "nothing was logged at INFO: the test would prove nothing"
    for line in text.splitlines():
        json.loads(line)
    for personal in ("Quixbert", "Zofia", "example.org"):
        assert personal not in text


def test_log_format_json_is_a_setting(database_urls, redis_url, smtp):
    root = logging.getLogger()
    before = list(root.handlers), root.level
    config = _base_config(database_urls["sqlite"], redis_url, smtp.port)
    config["LOG_FORMAT"] = "json"
    try:
        with fresh_app(config) as app:
            handlers = [h for h in root.handlers if isinstance(h.formatter, logs.JsonFormatter)]
            assert len(handlers) == 1
            assert app.logger.propagate
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in before[0]:
            root.addHandler(handler)
        root.setLevel(before[1])
