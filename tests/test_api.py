"""The JSON API through the Flask test client: status codes, error shapes, what is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from app import create_app
from campaign.db import db
from campaign.models import Appeal, CampaignOption, Status
from conftest import _base_config
from helpers import APPEALS_URL, confirmation_token, supporter

MAX_BODY = 64 * 1024


def appeal_count(app: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(db.select(db.func.count()).select_from(Appeal)))


def the_appeal(app: Any) -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        assert appeal is not None
        db.session.expunge(appeal)
        return appeal


def assert_error(reply: Any, code: int, error: str | None = None) -> dict[str, Any]:
    assert reply.status_code == code, reply.get_data(as_text=True)
    assert reply.mimetype == "application/json"
    body = reply.get_json()
    assert isinstance(body, dict)
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["fields"], dict)
    if error is not None:
        assert body["error"] == error
    return body


def tokens(smtp: Any) -> list[str]:
    return [confirmation_token(m.message.get_body(("plain",)).get_content()) for m in smtp.received]


# --- The happy path's shape ---------------------------------------------------------------


def test_submission_answers_202_and_the_confirmation_answers_with_the_status_url(
    app, client, smtp, work
):
    reply = client.post(APPEALS_URL, json=supporter())
    assert reply.status_code == 202
    body = reply.get_json()
    # The same answer for every valid submission: nothing about the address.
    assert body == {
        "status": Status.AWAITING_CONFIRMATION,
        "message": "Thank you. We have sent an e-mail to this address; its link sends the appeal.",
    }
    appeal = the_appeal(app)
    assert (appeal.name, appeal.email, appeal.language, appeal.country) == (
        "Ana García",
        "ana@example.org",
        "es",
        "GB",
    )

    # The owner of the address, holding the link, gets the status URL.
    work()
    [token] = tokens(smtp)
    reply = client.post(f"/api/v1/confirm/{token}")
    assert reply.status_code == 200
    body = reply.get_json()
    assert set(body) == {"id", "status", "status_url", "status_page", "campaign"}
    assert body["status_page"] == f"http://appeals.test/appeal/{appeal.public_id}"
    assert body["id"] == appeal.public_id
    assert body["status"] == Status.QUEUED
    assert body["campaign"] == "pavlov-extradition"
    # Built from PUBLIC_URL, whatever Host the request named.
    assert body["status_url"] == f"http://appeals.test/api/v1/appeals/{appeal.public_id}"

    status = client.get(f"/api/v1/appeals/{appeal.public_id}")
    assert status.status_code == 200
    assert status.get_json()["id"] == body["id"]
    assert status.get_json()["status"] == Status.QUEUED
    assert status.get_json()["sent_at"] is None


def test_status_of_an_unknown_appeal_is_404_json(app, client):
    assert_error(client.get("/api/v1/appeals/00000000-0000-0000-0000-000000000000"), 404)
    assert_error(client.get("/api/v1/appeals/" + "x" * 5000), 404)


def test_unknown_campaign_is_404_json(app, client):
    reply = client.post("/api/v1/campaigns/no-such-campaign/appeals", json=supporter())
    assert_error(reply, 404, "unknown_campaign")
    assert appeal_count(app) == 0


# --- Bodies that are not a JSON object -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps(supporter()), "text/plain"),
        ("name=Ana&email=ana%40example.org", "application/x-www-form-urlencoded"),
        (json.dumps(supporter()), None),
        ("", "application/json"),
        ("{", "application/json"),
        ("{'name': 'Ana'}", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        ("[]", "application/json"),
        (json.dumps([supporter()]), "application/json"),
        ('"Ana"', "application/json"),
        ("42", "application/json"),
        ("null", "application/json"),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_not_a_json_object_is_400_json(app, client, body, content_type):
    reply = client.post(APPEALS_URL, data=body, content_type=content_type)
    assert_error(reply, 400)
    assert appeal_count(app) == 0


def test_field_errors_are_422_with_every_field(app, client):
    reply = client.post(
        APPEALS_URL,
        json=supporter(email="nope", language="xx", country="ZZ", consent=False, name=42),
    )
    body = assert_error(reply, 422, "invalid_input")
    assert set(body["fields"]) == {"name", "email", "language", "country", "consent"}
    assert appeal_count(app) == 0


def test_header_injection_in_the_name_is_refused_and_nothing_is_sent(app, client, smtp, work):
    reply = client.post(APPEALS_URL, json=supporter(name="Ana\r\nBcc: victim@example.com"))
    body = assert_error(reply, 422, "invalid_input")
    assert set(body["fields"]) == {"name"}
    assert appeal_count(app) == 0
    work()
    assert smtp.received == []


def test_oversize_body_is_413_json_and_not_stored(app, client):
    data = json.dumps(supporter(message="m" * (MAX_BODY + 10)))
    assert len(data) > MAX_BODY
    reply = client.post(APPEALS_URL, data=data, content_type="application/json")
    assert_error(reply, 413)
    assert appeal_count(app) == 0


# --- Addresses ----------------------------------------------------------------------------


def test_idn_address_gets_its_confirmation(app, client, smtp, work):
    reply = client.post(APPEALS_URL, json=supporter(email="ana@bücher.example"))
    assert reply.status_code == 202
    work()
    assert [m.rcpt_tos for m in smtp.received] == [["ana@xn--bcher-kva.example"]]
    assert smtp.received[0].message["To"].addresses[0].addr_spec == "ana@xn--bcher-kva.example"


def test_non_ascii_local_part_is_422_not_a_silent_failure(app, client):
    body = assert_error(client.post(APPEALS_URL, json=supporter(email="anä@example.org")), 422)
    assert set(body["fields"]) == {"email"}
    assert appeal_count(app) == 0


@pytest.mark.parametrize(
    "token", ["garbage", "A" * 43, "x" * 129, "x" * 4000, "%00", "..%2F..%2Fetc"], ids=len
)
def test_confirm_with_a_bad_token_is_404_json(app, client, token):
    client.post(APPEALS_URL, json=supporter())
    assert_error(client.post(f"/api/v1/confirm/{token}"), 404)
    assert the_appeal(app).status == Status.AWAITING_CONFIRMATION


def test_paused_campaign_is_503_and_stores_nothing(app, client, smtp, work):
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", paused=True))
        db.session.commit()
    reply = client.post(APPEALS_URL, json=supporter())
    assert_error(reply, 503, "campaign_paused")
    assert int(reply.headers["Retry-After"]) > 0
    assert appeal_count(app) == 0
    work()
    assert smtp.received == []


# --- Flood --------------------------------------------------------------------------------


@pytest.fixture
def flood_app(app, backend, database_urls, redis_url, smtp, tmp_path) -> Iterator[Any]:
    """A second app on the same (emptied) database, with a low limit on appeals."""
    config = _base_config(database_urls[backend], redis_url, smtp.port)
    config["MAIL_CAPTURE_DIR"] = str(tmp_path / "capture")
    config["RATELIMIT_APPEALS"] = "3 per minute"
    flood = create_app(config)
    yield flood
    with flood.app_context():
        db.session.remove()
        db.engine.dispose()


def test_flood_is_429_json_after_the_limit(flood_app):
    client = flood_app.test_client()
    codes = [
        client.post(APPEALS_URL, json=supporter(email=f"ana{i}@example.org")).status_code
        for i in range(3)
    ]
    assert codes == [202, 202, 202]
    for i in range(3, 8):
        reply = client.post(APPEALS_URL, json=supporter(email=f"ana{i}@example.org"))
        assert_error(reply, 429)
        assert int(reply.headers["Retry-After"]) > 0
    # Garbage counts too: a flood of bad requests cannot get round the limit.
    assert_error(client.post(APPEALS_URL, data="{", content_type="application/json"), 429)
    assert appeal_count(flood_app) == 3
