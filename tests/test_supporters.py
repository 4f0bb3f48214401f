"""Supporters can't be exposed or impersonated: the same answer for every submission, no
takeover of a pending appeal, confirmation mail that can't carry spam, links that
expire, and personal data that goes. Real SMTP server, real Redis, both databases."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import url_for

from campaign.db import db, utcnow
from campaign.delivery.confirmations import DAY, DailyLimit
from campaign.mail import confirm_url, status_url
from campaign.models import Appeal, AppealEvent, CampaignOption, Status
from campaign.retention import apply_retention
from helpers import APPEALS_URL, confirmation_token, csrf_token, log_in, supporter

PAGE = "/c/pavlov-extradition"


def _form_post(client: Any, **fields: Any) -> Any:
    data = {
        "name": "Ana García",
        "email": "ana@example.org",
        "language": "es",
        "country": "GB",
        "message": "Por favor, actúe ya.",
        "consent": "y",
        "send": "Send my appeal",
        **fields,
        "csrf_token": csrf_token(client.get(PAGE).get_data(as_text=True)),
    }
    return client.post(PAGE, data=data)


def _appeal(app: Any, email: str = "ana@example.org") -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email=email))
        assert appeal is not None
        db.session.expunge(appeal)
        return appeal


def _mails_to(smtp: Any, address: str) -> list[Any]:
    return [m for m in smtp.received if m.rcpt_tos == [address]]


def _token(mail: Any) -> str:
    """The token in a confirmation mail's link, read from its decoded text."""
    return confirmation_token(mail.message.get_body(("plain",)).get_content())


def _confirm(client: Any, smtp: Any, address: str = "ana@example.org") -> Any:
    token = _token(_mails_to(smtp, address)[-1])
    return client.post(f"/api/v1/confirm/{token}")


# --- no enumeration ----------------------------------------------------------------------


def test_every_valid_submission_gets_the_same_answer(app, client, smtp, work):
    """New, pending, sent: the API and the form cannot tell them apart."""
    app.config["CONFIRMATION_MAILS_PER_DAY"] = 10
    new = client.post(APPEALS_URL, json=supporter(email="new@example.org"))
    client.post(APPEALS_URL, json=supporter(email="pending@example.org"))
    client.post(APPEALS_URL, json=supporter(email="sent@example.org"))
    work()
    _confirm(client, smtp, "sent@example.org")
    work()
    assert _appeal(app, "sent@example.org").status == Status.SENT

    replies = {
        email: client.post(APPEALS_URL, json=supporter(email=email, name="Someone Else"))
        for email in ("fresh@example.org", "pending@example.org", "sent@example.org")
    }
    bodies = {(r.status_code, r.get_data()) for r in replies.values()}
    assert bodies == {(202, new.get_data())}

    pages = {
        email: _form_post(client, email=email, name="Someone Else")
        for email in ("fresh2@example.org", "pending@example.org", "sent@example.org")
    }
    assert {r.status_code for r in pages.values()} == {200}
    texts = {r.get_data(as_text=True).replace(email, "ADDRESS") for email, r in pages.items()}
    assert len(texts) == 1


def test_a_paused_campaign_is_refused_for_everyone_alike(app, client):
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", paused=True))
        db.session.commit()
    reply = client.post(APPEALS_URL, json=supporter())
    assert reply.status_code == 503
    assert reply.get_json()["error"] == "campaign_paused"


# --- no takeover -------------------------------------------------------------------------


def test_a_new_submission_never_changes_a_pending_appeal(app, client, smtp, work):
    client.post(APPEALS_URL, json=supporter())
    work()
    before = _appeal(app)
    for post in (
        lambda: client.post(
            APPEALS_URL,
            json=supporter(name="Someone Else", message="Buy cheap watches", language="en"),
        ),
        lambda: _form_post(client, name="Someone Else", message="Buy cheap watches"),
    ):
        assert post().status_code in {200, 202}  # 202 from the API, 200 from the form
        after = _appeal(app)
        assert (after.name, after.message, after.language, after.country) == (
            before.name,
            before.message,
            before.language,
            before.country,
        )
    # The owner confirms: what goes is their own letter.
    assert _confirm(client, smtp).status_code == 200
    work()
    [appeal] = _mails_to(smtp, "ministro@mju.es") or [None]
    text = appeal.message.get_body(("plain",)).get_content()
    assert "Ana García" in text and "Someone Else" not in text and "watches" not in text


def test_the_owner_may_change_the_letter_on_the_confirm_page(app, client, smtp, work):
    client.post(APPEALS_URL, json=supporter())
    work()
    token = _token(smtp.received[0])
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    assert "Por favor, actúe ya." in page  # the letter, read before sending
    reply = client.post(
        f"/confirm/{token}",
        data={
            "csrf_token": csrf_token(page),
            "name": "Ana G.",
            "language": "en",
            "country": "ES",
            "message": "Please act now.",
            "submit": "Send my appeal",
        },
    )
    assert reply.status_code == 200
    work()
    [mail] = _mails_to(smtp, "ministro@mju.es")
    text = mail.message.get_body(("plain",)).get_content()
    assert text.startswith("Dear Minister,")
    assert "Please act now." in text and "Ana G." in text
    # Edits are checked like the form: a name posing as an address is refused.
    client.post(APPEALS_URL, json=supporter(email="b@example.org"))
    work()
    token = _token(_mails_to(smtp, "b@example.org")[0])
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    reply = client.post(
        f"/confirm/{token}",
        data={
            "csrf_token": csrf_token(page),
            "name": "Ministro <ministro@mju.es>",
            "language": "es",
            "country": "GB",
            "message": "",
            "submit": "Send my appeal",
        },
    )
    assert reply.status_code == 422
    assert _appeal(app, "b@example.org").status == Status.AWAITING_CONFIRMATION


# --- the confirmation mail ---------------------------------------------------------------


def test_the_confirmation_mail_carries_only_a_shortened_name(app, client, smtp, work):
    name = "Visit cheap-pills example com now " * 4  # 136 characters: too long for a name
    reply = client.post(
        APPEALS_URL, json=supporter(name=name[:120], message="BUY NOW at cheap-pills dot com")
    )
    assert reply.status_code == 202
    work()
    [mail] = smtp.received
    text = mail.message.get_body(("plain",)).get_content()
    html = mail.message.get_body(("html",)).get_content()
    for part in (text, html, str(mail.message["To"])):
        assert "BUY NOW" not in part
        assert name[:60] not in part or part.count(name[:61]) == 0
    assert name[:60].strip() in text
    assert name[:61] not in text


def test_one_supporter_mail_per_address_a_day_however_often_it_is_submitted(
    app, client, smtp, work
):
    for _ in range(3):
        client.post(APPEALS_URL, json=supporter())
        _form_post(client)
        work()
    assert len(_mails_to(smtp, "ana@example.org")) == 1
    # Through "send me the link again" too.
    page = client.get(f"{PAGE}/link").get_data(as_text=True)
    client.post(f"{PAGE}/link", data={"csrf_token": csrf_token(page), "email": "ana@example.org"})
    work()
    assert len(_mails_to(smtp, "ana@example.org")) == 1
    appeal = _appeal(app)
    assert appeal.next_attempt_at is not None  # the next one waits for tomorrow
    assert appeal.next_attempt_at > utcnow() + timedelta(hours=23)


def test_send_me_the_link_again(app, client, smtp, redis, work):
    client.post(APPEALS_URL, json=supporter())
    work()
    [first] = smtp.received
    redis.flushdb()  # a day later, as far as the limit is concerned
    page = client.get(f"{PAGE}/link").get_data(as_text=True)
    answers = [
        client.post(f"{PAGE}/link", data={"csrf_token": csrf_token(page), "email": email})
        for email in ("ana@example.org", "nobody@example.org")
    ]
    assert [a.status_code for a in answers] == [200, 200]
    texts = {
        a.get_data(as_text=True).replace(e, "X")
        for a, e in zip(answers, ("ana@example.org", "nobody@example.org"), strict=True)
    }
    assert len(texts) == 1  # the same answer either way
    work()
    assert [m.rcpt_tos for m in smtp.received] == [["ana@example.org"], ["ana@example.org"]]
    # The same link: the first still works.
    assert _token(smtp.received[1]) == _token(first)


# --- links expire ------------------------------------------------------------------------


def _age(app: Any, days: float) -> None:
    with app.app_context():
        db.session.execute(
            db.update(Appeal).values(token_issued_at=utcnow() - timedelta(days=days))
        )
        db.session.commit()


def test_a_link_older_than_seven_days_sends_nothing(app, client, smtp, work):
    client.post(APPEALS_URL, json=supporter())
    work()
    token = _token(smtp.received[0])
    _age(app, 7.01)
    reply = client.post(f"/api/v1/confirm/{token}")
    assert reply.status_code == 410
    assert reply.get_json()["error"] == "expired_token"
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 410
    assert "This link has expired" in page.get_data(as_text=True)
    assert _appeal(app).status == Status.AWAITING_CONFIRMATION
    _age(app, 6.9)
    assert client.post(f"/api/v1/confirm/{token}").status_code == 200


def test_submitting_again_after_the_link_expired_sends_a_new_one(app, client, smtp, redis, work):
    client.post(APPEALS_URL, json=supporter())
    work()
    old = _token(smtp.received[0])
    _age(app, 8)
    redis.flushdb()  # days later, as far as the daily limit is concerned
    client.post(APPEALS_URL, json=supporter(name="Someone Else"))
    work()
    new = _token(smtp.received[1])
    assert new != old
    assert client.post(f"/api/v1/confirm/{old}").status_code == 404
    assert client.post(f"/api/v1/confirm/{new}").status_code == 200
    assert _appeal(app).name == "Ana García"  # still the owner's words


# --- retention ---------------------------------------------------------------------------


def test_personal_data_goes_after_the_retention_period_and_the_counts_stay(app, client, smtp, work):
    client.post(APPEALS_URL, json=supporter(email="sent@example.org"))
    client.post(APPEALS_URL, json=supporter(email="unconfirmed@example.org"))
    work()
    _confirm(client, smtp, "sent@example.org")
    work()
    with app.app_context():
        assert apply_retention().erased == 0  # nothing is old enough yet
        db.session.execute(
            db.update(Appeal)
            .where(Appeal.email == "sent@example.org")
            .values(updated_at=utcnow() - timedelta(days=31))
        )
        db.session.execute(
            db.update(Appeal)
            .where(Appeal.email == "unconfirmed@example.org")
            .values(token_issued_at=utcnow() - timedelta(days=8))
        )
        db.session.commit()
        report = apply_retention()
        assert (report.expired, report.erased) == (1, 2)
        rows = db.session.scalars(db.select(Appeal).order_by(Appeal.id)).all()
        assert [(a.status, a.name, a.message) for a in rows] == [
            (Status.SENT, "", None),
            (Status.CANCELLED, "", None),
        ]
        assert all(a.email == f"erased-{a.public_id}" and a.erased_at for a in rows)
        assert all(a.country == "GB" and a.language == "es" for a in rows)  # for the counts
        reasons = db.session.scalars(db.select(AppealEvent.reason)).all()
        assert all(r is None for r in reasons)


def test_retention_by_hand_and_in_the_local_mail_capture(app, client, tmp_path):
    """`flask appeals retention` applies it at once; the local capture, which holds whole
    letters, is pruned to the same limit."""
    import os
    import time

    capture = tmp_path / "capture"
    (capture / "new").mkdir(parents=True)
    old, fresh = capture / "new" / "old", capture / "new" / "fresh"
    old.write_bytes(b"Subject: an old letter\r\n\r\nAna\r\n")
    fresh.write_bytes(b"Subject: a new letter\r\n\r\nBea\r\n")
    long_ago = time.time() - 31 * 86400
    os.utime(old, (long_ago, long_ago))
    app.config.update(MAIL_CAPTURE=True, MAIL_CAPTURE_DIR=str(capture))
    client.post(APPEALS_URL, json=supporter())
    _age(app, 8)
    result = app.test_cli_runner().invoke(args=["appeals", "retention"])
    assert result.exit_code == 0, result.output
    assert "expired=1, erased=1, captured_mail_removed=1" in result.output
    assert not old.exists() and fresh.exists()
    assert _appeal(app, f"erased-{_public_id(app)}").status == Status.CANCELLED


def test_a_manager_erases_a_supporter_on_request(app, client, smtp, work):
    from campaign.models import Role
    from campaign.users import create_user

    client.post(APPEALS_URL, json=supporter())
    with app.app_context():
        create_user("manager@example.org", Role.MANAGER, "correct horse battery staple")
    log_in(client, "manager@example.org", "correct horse battery staple")
    page = client.get("/manage/erase").get_data(as_text=True)
    reply = client.post(
        "/manage/erase", data={"csrf_token": csrf_token(page), "email": "ANA@example.org"}
    )
    assert reply.status_code == 302
    assert "Erased the personal data of 1 appeal" in client.get("/manage/erase").get_data(
        as_text=True
    )
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        assert (appeal.status, appeal.name, appeal.erased_at is not None) == (
            Status.CANCELLED,
            "",
            True,
        )
    work()
    assert smtp.received == []  # its confirmation mail never went: cancelled first


def test_the_cli_erases_a_supporter(app, client):
    client.post(APPEALS_URL, json=supporter())
    result = app.test_cli_runner().invoke(args=["appeals", "erase", "ana@example.org"])
    assert result.exit_code == 0
    assert "erased the personal data of 1 appeal(s)" in result.output
    assert _appeal(app, f"erased-{_public_id(app)}").name == ""


def _public_id(app: Any) -> str:
    with app.app_context():
        return str(db.session.scalar(db.select(Appeal.public_id)))


@pytest.mark.parametrize("depth", [5000, 30_000])
def test_deeply_nested_json_is_a_400(app, client, depth):
    body = "[" * depth + "]" * depth
    reply = client.post(APPEALS_URL, data=body, content_type="application/json")
    assert reply.status_code == 400
    assert reply.get_json()["error"] == "bad_json"


# --- a batch of supporter mail -------------------------------------------------------------


def test_the_daily_share_is_taken_for_a_whole_batch_at_once(redis):
    """One pipeline for a batch's addresses: an address twice in it counts twice, and a
    refused take is given back, so the count stays at the share."""
    limit = DailyLimit(redis, 2)
    assert limit.take_all(["a@example.org", "b@example.org", "a@example.org"]) == [
        True,
        True,
        True,
    ]
    assert limit.take_all(["a@example.org", "b@example.org", "c@example.org"]) == [
        False,
        True,
        True,
    ]
    assert limit.take_all([]) == []
    assert int(redis.get(DailyLimit._key("a@example.org"))) == 2
    assert 0 < limit.free_in("a@example.org") <= DAY
    limit.give_back("a@example.org")
    assert limit.take_all(["a@example.org"]) == [True]
    assert limit.take_all(["a@example.org"]) == [False]


def test_links_in_supporter_mail_are_the_routes_under_public_url(app):
    """Built from the app's routes bound once to PUBLIC_URL (path prefix and all), the
    links are those url_for gives in a request to that address; a changed PUBLIC_URL
    is followed."""
    for base in ("https://appeals.example.org/uk/", "http://127.0.0.1:8000", "https://x.org/a/b"):
        app.config["PUBLIC_URL"] = base
        with app.test_request_context(base_url=base):
            expected = (
                url_for("public.confirm", token="to/ken?", _external=True),
                url_for("public.status", public_id="abc", lang="fr", _external=True),
                url_for("public.status", public_id="abc", _external=True),
            )
        with app.app_context():
            built = (confirm_url("to/ken?"), status_url("abc", "fr"), status_url("abc"))
        assert built == expected
        assert built[0].startswith(base.rstrip("/") + "/confirm/")
