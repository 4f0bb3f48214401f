"""The supporter's HTML pages: the campaign form, preview, send, and the confirmation page."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from campaign.db import db
from campaign.models import Appeal, Status
from helpers import confirmation_token

PAGE = "/c/pavlov-extradition"
CONSENT_ERROR = "Please agree that we send this appeal in your name."


def csrf_token(client: Any, url: str) -> str:
    page = client.get(url)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True))
    assert found, "no csrf_token in the page"
    return found.group(1)


def form(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Ana García",
        "email": "ana@example.org",
        "language": "en",
        "country": "GB",
        "message": "Please act now.",
        "consent": "y",
        "send": "Send my appeal",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def appeals(app: Any) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [
            (a.name, a.email, a.status)
            for a in db.session.scalars(db.select(Appeal).order_by(Appeal.id))
        ]


def preview_text(body: str) -> str:
    found = re.search(r'<div class="letter" id="letter-preview">(.*?)</div>', body, re.S)
    assert found, "no letter preview in the page"
    return html.unescape(found.group(1))


def test_page_shows_the_deadline_and_the_late_notice(app, client):
    page = client.get(PAGE)
    assert page.status_code == 200
    body = page.get_data(as_text=True)
    assert "Please send appeals before 5 September 2013." in body
    assert (
        "Please check with your section office if sending appeals after 5 September 2013." in body
    )
    assert 'name="csrf_token"' in body


def test_unknown_campaign_page_is_404(app, client):
    assert client.get("/c/no-such-campaign").status_code == 404


@pytest.mark.parametrize("token", [..., "", "not-a-real-token"], ids=["missing", "empty", "bad"])
def test_post_without_a_valid_csrf_token_is_400_and_stores_nothing(app, client, smtp, work, token):
    client.get(PAGE)  # a session exists; the token is what is missing
    reply = client.post(PAGE, data=form(csrf_token=token))
    assert reply.status_code == 400
    assert "nothing you typed was sent" in reply.get_data(as_text=True)
    assert appeals(app) == []
    work()
    assert smtp.received == []


def test_preview_renders_the_personal_letter_escaped_and_stores_nothing(app, client, smtp, work):
    name = 'O\'Brien & "Sons"'
    message = 'Free him & "now" <b>today</b> <script>alert(1)</script>.'
    data = form(name=name, message=message, consent=..., send=..., preview="Preview my appeal")
    data["csrf_token"] = csrf_token(client, PAGE)
    reply = client.post(PAGE, data=data)
    assert reply.status_code == 200
    body = reply.get_data(as_text=True)

    assert "<b>today</b>" not in body and "<script>alert(1)" not in body  # never raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    letter = preview_text(body)
    assert letter.startswith("Dear Minister,")
    assert "diplomatic assurances" in letter.lower()  # wording varies; this does not
    assert "\n* * *\n\nVersión en español de esta carta:\n\nSr. Ministro:\n" in letter
    assert f"{message}\n\nYours sincerely,\n\n{name}\nUnited Kingdom\n" in letter
    assert "Copies to: Sr. D. Javier Zaragoza Aguado, Chief Prosecutor" in letter
    assert "ministro@mju.es" in body  # the To: line above the letter

    assert appeals(app) == []
    work()
    assert smtp.received == []


def test_preview_in_spanish_uses_the_spanish_letter(app, client):
    data = form(language="es", send=..., preview="Preview my appeal")
    data["csrf_token"] = csrf_token(client, PAGE)
    letter = preview_text(client.post(PAGE, data=data).get_data(as_text=True))
    assert letter.startswith("Sr. Ministro")
    assert "Ana García\nReino Unido" in letter


def test_preview_with_bad_fields_shows_the_errors(app, client):
    data = form(name="Ana\r\nBcc: victim@example.com", send=..., preview="Preview my appeal")
    data["csrf_token"] = csrf_token(client, PAGE)
    reply = client.post(PAGE, data=data)
    assert reply.status_code == 422
    body = reply.get_data(as_text=True)
    assert "The name must be a single line without control characters." in body
    assert 'id="letter-preview"' not in body
    assert appeals(app) == []


def test_send_without_consent_is_422_with_the_consent_error(app, client, smtp, work):
    data = form(consent=...)
    data["csrf_token"] = csrf_token(client, PAGE)
    reply = client.post(PAGE, data=data)
    assert reply.status_code == 422
    body = reply.get_data(as_text=True)
    # The message is tied to its box (aria-describedby names it).
    assert f'<p class="error" id="consent-error">{CONSENT_ERROR}</p>' in body
    assert 'aria-describedby="consent-error"' in body
    assert 'value="Ana García"' in body  # what the supporter typed is kept
    assert appeals(app) == []
    work()
    assert smtp.received == []


def test_send_confirm_by_button_and_deliver(app, client, smtp, work):
    data = form()
    data["csrf_token"] = csrf_token(client, PAGE)
    reply = client.post(PAGE, data=data)
    assert reply.status_code == 200
    body = reply.get_data(as_text=True)
    assert "<h1>Thank you</h1>" in body
    assert "ana@example.org" in body
    assert appeals(app) == [("Ana García", "ana@example.org", Status.AWAITING_CONFIRMATION)]

    work()
    [confirmation] = smtp.received
    assert confirmation.rcpt_tos == ["ana@example.org"]
    token = confirmation_token(confirmation.message.get_body(("plain",)).get_content())

    # Opening the link (or a mail scanner prefetching it) only shows a button.
    page = client.get(f"/confirm/{token}")
    assert page.status_code == 200
    assert "Send my appeal" in page.get_data(as_text=True)
    assert '<form method="post" novalidate>' in page.get_data(as_text=True)
    # The owner reads the letter that will go in their name before sending it.
    assert "Please act now." in page.get_data(as_text=True)
    assert appeals(app)[0][2] == Status.AWAITING_CONFIRMATION
    work()
    assert len(smtp.received) == 1

    # The button without its CSRF token does nothing either.
    assert client.post(f"/confirm/{token}").status_code == 400
    assert appeals(app)[0][2] == Status.AWAITING_CONFIRMATION

    reply = client.post(
        f"/confirm/{token}", data={"csrf_token": csrf_token(client, f"/confirm/{token}")}
    )
    assert reply.status_code == 200
    assert "your appeal is on its way" in reply.get_data(as_text=True)
    assert appeals(app)[0][2] == Status.QUEUED

    work()
    assert len(smtp.received) == 2
    appeal_mail = smtp.received[1]
    assert appeal_mail.rcpt_tos == ["ministro@mju.es"]
    text = appeal_mail.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Dear Minister,")
    assert "Please act now.\n\nYours sincerely,\n\nAna García\nUnited Kingdom" in text
    assert appeals(app)[0][2] == Status.SENT

    # The link is spent: it says so, and where the appeal is; nothing goes again.
    again = client.post(f"/confirm/{token}", data={"csrf_token": csrf_token(client, PAGE)})
    assert again.status_code == 200
    assert "You have already confirmed this appeal" in again.get_data(as_text=True)
    assert appeals(app)[0][2] == Status.SENT


def test_confirm_with_an_unknown_token_is_404(app, client):
    token = csrf_token(client, PAGE)
    reply = client.post("/confirm/not-a-token", data={"csrf_token": token})
    assert reply.status_code == 404
    assert "This link does not work any more" in reply.get_data(as_text=True)


def test_sending_again_after_confirmation_answers_the_same_and_tells_the_owner(
    app, client, smtp, work
):
    app.config["CONFIRMATION_MAILS_PER_DAY"] = 2  # room for the notice today
    data = form()
    data["csrf_token"] = csrf_token(client, PAGE)
    first = client.post(PAGE, data=data)
    assert first.status_code == 200
    work()
    token = confirmation_token(smtp.received[0].message.get_body(("plain",)).get_content())
    assert (
        client.post(f"/confirm/{token}", data={"csrf_token": data["csrf_token"]}).status_code == 200
    )
    work()  # the appeal goes
    work()  # and its receipt

    # Whoever submits the address again learns nothing from the page...
    again = client.post(PAGE, data=form(name="Ana Again", csrf_token=data["csrf_token"]))
    assert again.status_code == 200
    assert again.get_data(as_text=True) == first.get_data(as_text=True)
    assert appeals(app) == [("Ana García", "ana@example.org", Status.SENT)]
    # ...and the owner of the address is told by e-mail, in words no one typed.
    work()
    notice = smtp.received[-1]
    assert notice.rcpt_tos == ["ana@example.org"]
    text = notice.message.get_body(("plain",)).get_content()
    assert "An appeal from this address was already sent" in text
    assert "Ana Again" not in text and "Ana García" not in text
