"""Rate limits on supporters' submissions (campaign/views/limits.py), on real Redis:
only real sends count; per client (generous, one budget for the form, the API and
"send me the link again") and per e-mail address (tight, and silent)."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from campaign.db import db
from campaign.models import Appeal, AppealEvent
from helpers import APPEALS_URL, form_fields, supporter

PAGE = "/c/pavlov-extradition"
LINK_PAGE = "/c/pavlov-extradition/link"
LIMIT_MESSAGE = "Many appeals have been sent from your connection just now."


@pytest.fixture
def limited(app: Any) -> Any:
    """The test app with two real sends a minute per client."""
    app.config["RATELIMIT_APPEALS"] = "2 per minute"
    return app


def post_form(client: Any, button: str, address: str = "127.0.0.1", **fields: str) -> Any:
    """Fill in the campaign form as a browser would (its CSRF token, its defaults)."""
    page = client.get(PAGE, environ_base={"REMOTE_ADDR": address})
    data = form_fields(page.get_data(as_text=True), "")
    data.update(fields)
    data[button] = "y"
    return client.post(PAGE, data=data, environ_base={"REMOTE_ADDR": address})


def good(email: str) -> dict[str, str]:
    return {
        "name": "Ana García",
        "email": email,
        "language": "es",
        "country": "GB",
        "message": "Por favor, actúe ya.",
        "consent": "y",
    }


def stored(app: Any) -> list[str]:
    with app.app_context():
        emails = list(db.session.scalars(db.select(Appeal.email).order_by(Appeal.id)))
        db.session.remove()
    return emails


def events_of(app: Any, email: str) -> int:
    with app.app_context():
        n = db.session.scalar(
            db.select(db.func.count())
            .select_from(AppealEvent)
            .join(Appeal, Appeal.id == AppealEvent.appeal_id)
            .where(Appeal.email == email)
        )
        db.session.remove()
    return int(n or 0)


def test_previews_and_mistakes_do_not_count_real_sends_do(limited: Any) -> None:
    client = limited.test_client()
    for _ in range(4):
        assert post_form(client, "preview", **good("ana@example.org")).status_code == 200
        assert post_form(client, "send", **good("not-an-address")).status_code == 422
        assert (
            post_form(client, "send", **{**good("ana@example.org"), "consent": ""}).status_code
            == 422
        )
    assert stored(limited) == []
    assert post_form(client, "send", **good("ana@example.org")).status_code == 200
    assert post_form(client, "send", **good("ben@example.org")).status_code == 200

    typed = {**good("cleo@example.org"), "name": "Cleo <b>Ö</b>", "message": "Line 1\r\nLine 2"}
    reply = post_form(client, "send", **typed)
    assert reply.status_code == 429
    retry = int(reply.headers["Retry-After"])
    assert 0 < retry <= 60
    body = reply.get_data(as_text=True)
    assert LIMIT_MESSAGE in body
    assert "Nothing was sent" in body and "try again in" in body
    # The form comes back with everything that was typed, escaped.
    kept = form_fields(body, "")
    assert {k: kept.get(k) for k in typed} == typed
    assert "<b>Ö</b>" not in body
    assert stored(limited) == ["ana@example.org", "ben@example.org"]
    # Over the limit, a preview is refused too (the limit is checked before the page).
    assert post_form(client, "preview", **good("dan@example.org")).status_code == 429


def test_the_api_counts_only_accepted_submissions(limited: Any) -> None:
    client = limited.test_client()
    for bad in ({"email": "nope"}, {"consent": False}, {"country": "XX"}):
        assert client.post(APPEALS_URL, json=supporter(**bad)).status_code == 422
    assert client.post(APPEALS_URL, data="{", content_type="application/json").status_code == 400
    assert client.post(APPEALS_URL, json=supporter(email="a@example.org")).status_code == 202
    assert client.post(APPEALS_URL, json=supporter(email="b@example.org")).status_code == 202
    reply = client.post(APPEALS_URL, json=supporter(email="c@example.org"))
    assert reply.status_code == 429
    assert reply.json["error"] == "too_many_requests"
    assert 0 < int(reply.headers["Retry-After"]) <= 60
    assert stored(limited) == ["a@example.org", "b@example.org"]


def test_form_api_and_link_share_one_budget_per_client_and_others_are_free(
    limited: Any,
) -> None:
    client = limited.test_client()
    assert post_form(client, "send", **good("a@example.org")).status_code == 200
    assert client.post(APPEALS_URL, json=supporter(email="b@example.org")).status_code == 202
    token = form_fields(client.get(LINK_PAGE).get_data(as_text=True), "")["csrf_token"]
    reply = client.post(LINK_PAGE, data={"csrf_token": token, "email": "kept@example.org"})
    assert reply.status_code == 429
    assert form_fields(reply.get_data(as_text=True), "")["email"] == "kept@example.org"
    assert LIMIT_MESSAGE in reply.get_data(as_text=True)
    # Another client, behind another address, is not held up.
    other = {"REMOTE_ADDR": "198.51.100.20"}
    reply = client.post(APPEALS_URL, json=supporter(email="c@example.org"), environ_base=other)
    assert reply.status_code == 202


def test_a_link_request_with_a_bad_address_does_not_count(limited: Any) -> None:
    client = limited.test_client()
    token = form_fields(client.get(LINK_PAGE).get_data(as_text=True), "")["csrf_token"]
    for _ in range(4):
        bad = client.post(LINK_PAGE, data={"csrf_token": token, "email": "x" * 60_000})
        assert bad.status_code == 422
    for n in range(2):
        ok = client.post(LINK_PAGE, data={"csrf_token": token, "email": f"p{n}@example.org"})
        assert ok.status_code == 200
    assert (
        client.post(LINK_PAGE, data={"csrf_token": token, "email": "q@example.org"}).status_code
        == 429
    )


def test_an_ipv6_client_is_its_64_network(limited: Any) -> None:
    client = limited.test_client()

    def send(address: str, email: str) -> int:
        reply = client.post(
            APPEALS_URL, json=supporter(email=email), environ_base={"REMOTE_ADDR": address}
        )
        return int(reply.status_code)

    assert send("2001:db8:1:2::10", "a@example.org") == 202
    assert send("2001:db8:1:2:ffff::99", "b@example.org") == 202  # same /64: same client
    assert send("2001:db8:1:2::abcd", "c@example.org") == 429
    assert send("2001:db8:1:3::10", "d@example.org") == 202  # the next /64 is someone else


def test_one_address_is_limited_quietly_from_anywhere(app: Any, redis: Redis) -> None:
    app.config["RATELIMIT_APPEALS_EMAIL"] = "2 per hour"
    client = app.test_client()
    answers = []
    for n in range(5):  # five clients, one address
        reply = client.post(
            APPEALS_URL,
            json=supporter(email="Target@Example.org"),
            environ_base={"REMOTE_ADDR": f"203.0.113.{n + 1}"},
        )
        answers.append((reply.status_code, reply.json))
    # The same answer every time: nobody learns from a refusal that the address was used.
    assert answers == [answers[0]] * 5 and answers[0][0] == 202
    # The first made the appeal, the second sent its link again; the rest changed nothing.
    assert stored(app) == ["target@example.org"]
    assert events_of(app, "target@example.org") == 2
    # Another address is not affected.
    assert client.post(APPEALS_URL, json=supporter(email="other@example.org")).status_code == 202
    # The count is kept under a hash: Redis never holds the address.
    keys = b" ".join(redis.keys("*"))
    assert b"LIMITER" in keys and b"target" not in keys.lower()


def test_limits_switched_off_count_nothing(app: Any) -> None:
    app.config.update(RATELIMIT_APPEALS_EMAIL="1 per hour", RATELIMIT_ENABLED=False)
    client = app.test_client()
    for _ in range(3):
        assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    assert events_of(app, "ana@example.org") == 3
