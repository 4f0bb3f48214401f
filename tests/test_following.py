"""Supporters follow their appeal: the deadline and the section office, paused and closed
campaigns, the status page, the receipt, the used confirmation link, the public count.
Real SMTP server (aiosmtpd on loopback), real Redis and RQ worker, both databases."""

from __future__ import annotations

import dataclasses
import re
from datetime import date, timedelta
from typing import Any

import pytest
from flask_babel import force_locale, gettext
from sqlalchemy import update

from campaign import progress
from campaign.db import db, utcnow
from campaign.delivery import receipts
from campaign.delivery.dispatcher import Dispatcher, Report
from campaign.delivery.journal import Journal
from campaign.delivery.recipients import Copy, to_note
from campaign.delivery.runner import Batch
from campaign.models import (
    Appeal,
    AppealEvent,
    AuditEvent,
    CampaignOption,
    Delivery,
    Recipient,
    Role,
    Status,
)
from campaign.retention import erase_supporter
from campaign.synthetic import create_synthetic
from campaign.tokens import confirmation_token
from campaign.users import create_user
from helpers import APPEALS_URL, csrf_token, log_in, supporter

SLUG = "pavlov-extradition"
PAGE = f"/c/{SLUG}"
MINISTER = "ministro@mju.es"


# --- helpers -----------------------------------------------------------------------------


def _options(app: Any, **values: Any) -> None:
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG) or CampaignOption(slug=SLUG)
        for key, value in values.items():
            setattr(option, key, value)
        db.session.merge(option)
        db.session.commit()


def _appeal(app: Any, email: str = "ana@example.org") -> Appeal:
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal).filter_by(email=email))
        assert appeal is not None, email
        db.session.expunge(appeal)
        return appeal


def _count(app: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(db.select(db.func.count()).select_from(Appeal)) or 0)


def _token(app: Any, email: str = "ana@example.org") -> str:
    """The token of the appeal's link, as its confirmation mail carries it."""
    with app.app_context():
        return confirmation_token(_appeal(app, email))


def _mails_to(smtp: Any, address: str) -> list[Any]:
    return [m for m in smtp.received if m.rcpt_tos == [address]]


def _text(mail: Any) -> str:
    return str(mail.message.get_body(("plain",)).get_content())


def _html(mail: Any) -> str:
    return str(mail.message.get_body(("html",)).get_content())


def _sent_appeal(app: Any, client: Any, work: Any, email: str = "ana@example.org", **kw: Any):
    """An appeal submitted, confirmed by its owner and accepted by the relay."""
    assert client.post(APPEALS_URL, json=supporter(email=email, **kw)).status_code == 202
    work()
    assert client.post(f"/api/v1/confirm/{_token(app, email)}").status_code == 200
    work()
    appeal = _appeal(app, email)
    assert appeal.status == Status.SENT
    return appeal


def _page(client: Any, url: str, **headers: Any) -> tuple[int, str, Any]:
    reply = client.get(url, headers=headers)
    return reply.status_code, reply.get_data(as_text=True), reply


def _move_deadline(app: Any, days: int) -> None:
    """The campaign as if its deadline were ``days`` from today."""
    campaigns = app.extensions["campaigns"]
    campaigns[SLUG] = dataclasses.replace(
        campaigns[SLUG], deadline=date.today() + timedelta(days=days)
    )


def _receipts(smtp: Any, address: str = "ana@example.org") -> list[Any]:
    return [
        m
        for m in _mails_to(smtp, address)
        if "/appeal/" in _text(m) and "/confirm/" not in _text(m)
    ]


# --- paused and closed campaigns: the API ------------------------------------------------


def test_api_answers_503_with_retry_after_when_paused_and_410_when_closed(app, client, smtp, work):
    _options(app, paused=True)
    reply = client.post(APPEALS_URL, json=supporter())
    assert reply.status_code == 503
    assert reply.get_json()["error"] == "campaign_paused"
    assert int(reply.headers["Retry-After"]) >= 3000
    # Even a body that is not an appeal learns why first: nothing it says would help.
    assert client.post(APPEALS_URL, data="{", content_type="application/json").status_code == 503

    _options(app, paused=False, closed=True)
    reply = client.post(APPEALS_URL, json=supporter())
    assert reply.status_code == 410
    assert reply.get_json()["error"] == "campaign_closed"

    # Closing at the deadline: the seed's deadline (5 September 2013) is long past.
    _options(app, closed=False, close_at_deadline=True)
    assert client.post(APPEALS_URL, json=supporter()).status_code == 410
    campaigns = client.get("/api/v1/campaigns").get_json()["campaigns"]
    assert [c["state"] for c in campaigns if c["slug"] == SLUG] == ["closed"]
    _move_deadline(app, days=3)
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202

    assert _count(app) == 1  # only the one that was taken
    work()
    assert [m.rcpt_tos for m in smtp.received] == [["ana@example.org"]]


def test_an_open_campaign_past_its_deadline_still_takes_appeals(app, client):
    """Unless it closes at its deadline, the notice says to check with the section office
    and the appeal is taken: the organisers decide."""
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202


# --- paused and closed campaigns: the page -----------------------------------------------


@pytest.mark.parametrize(
    ("switch", "code", "heading"),
    [("paused", 503, "This campaign is paused"), ("closed", 410, "This campaign is closed")],
)
def test_paused_or_closed_page_shows_the_state_not_the_form(app, client, switch, code, heading):
    token = csrf_token(client.get(PAGE).get_data(as_text=True))  # the form, before
    _options(app, **{switch: True})
    status, html, _ = _page(client, PAGE)
    assert status == 200
    assert heading in html
    assert 'name="email"' not in html and '<form method="post"' not in html
    assert 'id="deadline"' in html  # the campaign is still described

    # Someone who filled in the form before it changed: a clear answer, nothing stored,
    # and their sentence (hostile as it may be) given back to keep, escaped.
    sentence = "Liberad a Pavlov <script>alert(1)</script>\r\n" + "ñ" * 900
    reply = client.post(
        PAGE,
        data={
            "csrf_token": token,
            "name": "Ana García",
            "email": "ana@example.org",
            "language": "es",
            "country": "GB",
            "message": sentence,
            "consent": "y",
            "send": "Send my appeal",
        },
    )
    html = reply.get_data(as_text=True)
    assert reply.status_code == code
    assert heading in html and "Nothing was sent." in html
    assert "Liberad a Pavlov &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert ("ñ" * 900) in html
    if switch == "paused":  # an hour: a pause is the organisers' call, not a matter of seconds
        assert int(reply.headers["Retry-After"]) >= 3000
    assert _count(app) == 0


def test_a_post_from_elsewhere_to_a_closed_campaign_is_not_echoed(app, client):
    _options(app, closed=True)
    reply = client.post(PAGE, data={"message": "Visit evil.example", "send": "y"})
    assert reply.status_code == 400  # CSRF: not from our page
    assert "Visit evil.example" not in reply.get_data(as_text=True)


# --- the deadline and the section office -------------------------------------------------


def test_the_form_shows_the_deadline_and_no_late_notice_before_it(app, client):
    _move_deadline(app, days=10)
    _options(app, section_contacts={"*": "Amnesty International, +44 20 7413 5500"})
    day = date.today() + timedelta(days=10)
    status, html, _ = _page(client, PAGE)
    assert status == 200
    deadline = re.search(r'<p class="notice" id="deadline">(.*?)</p>', html, re.S)
    assert deadline and f"{day.day} {day:%B} {day.year}" in deadline.group(1)
    assert "check with your section office" not in html.lower()
    assert 'id="section-contact"' not in html
    assert 'name="email"' in html


def test_past_the_deadline_the_notice_names_the_section_office_of_the_visitors_country(app, client):
    _options(
        app,
        section_contacts={
            "*": "Amnesty International Secretariat, uaoffice@amnesty.test",
            "DE": "Amnesty Deutschland <b>Berlin</b>, +49 30 420248-0",
            "GB": "Amnesty UK, London",
        },
    )
    # The browser's region (de-DE) tells the country; the notice is the seed's.
    _, html, _ = _page(client, PAGE, **{"Accept-Language": "de-DE,de;q=0.9"})
    contact = re.search(r'<span id="section-contact">(.*?)</span>', html, re.S)
    assert (
        contact
        and "Amnesty Deutschland &lt;b&gt;Berlin&lt;/b&gt;, +49 30 420248-0" in contact.group(1)
    )
    assert "Secretariat" not in contact.group(1)
    assert 'name="email"' in html  # open: still taking appeals
    # A country chosen on the page wins; one without an office gets the default one.
    _, html, _ = _page(client, f"{PAGE}?country=gb")
    assert "Amnesty UK, London" in html
    _, html, _ = _page(client, f"{PAGE}?country=FR")
    assert "Amnesty International Secretariat" in html
    reply = client.get(PAGE, query_string={"country": "\r\n<x>" * 20_000})
    assert reply.status_code == 200
    assert "Amnesty International Secretariat" in reply.get_data(as_text=True)
    # The late notice itself comes from the campaign file (the seed's words).
    assert "check with your section office" in html.lower()
    # Every country with an office is one link away.
    offices = re.search(r'<span class="muted" id="section-offices">(.*?)</span>', html, re.S)
    assert offices and "country=DE" in offices.group(1) and "country=GB" in offices.group(1)


def test_closed_at_the_deadline_shows_the_notice_and_the_office_not_the_form(app, client):
    _options(app, close_at_deadline=True, section_contacts={"*": "Call +34 91 000 00 00"})
    status, html, _ = _page(client, PAGE)
    assert status == 200
    assert "This campaign is closed" in html
    assert "Call +34 91 000 00 00" in html
    assert 'name="email"' not in html


# --- the admin switches ------------------------------------------------------------------


@pytest.fixture
def admin_client(app, client):
    with app.app_context():
        create_user("admin@example.org", Role.ADMIN, "correct horse battery staple")
    assert log_in(client, "admin@example.org", "correct horse battery staple").status_code == 302
    return client


def _switches(client: Any, **fields: Any) -> Any:
    token = csrf_token(client.get(f"/admin/campaigns/{SLUG}").get_data(as_text=True))
    return client.post(f"/admin/campaigns/{SLUG}", data={"csrf_token": token, **fields})


def test_admin_sets_closed_close_at_deadline_and_contacts_audited(app, admin_client):
    reply = _switches(
        admin_client,
        confirmation_required="y",
        close_at_deadline="y",
        section_contacts="*: Amnesty International\r\n\r\nde:  Amnesty   Deutschland \n",
    )
    assert reply.status_code == 302
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        assert option.close_at_deadline and not option.closed and not option.paused
        assert option.section_contacts == {
            "*": "Amnesty International",
            "DE": "Amnesty Deutschland",
        }
        [event] = db.session.scalars(
            db.select(AuditEvent).filter_by(action="campaign switches")
        ).all()
        assert event.actor == "admin@example.org"
        assert "close_at_deadline=True" in event.detail and "closed=False" in event.detail
        assert "section offices changed: * DE" in event.detail
    page = admin_client.get(f"/admin/campaigns/{SLUG}").get_data(as_text=True)
    assert "*: Amnesty International\nDE: Amnesty Deutschland" in page
    assert "<strong>closed</strong>" in page  # the seed's deadline has passed

    reply = _switches(admin_client, closed="y", section_contacts="*: Amnesty International")
    assert reply.status_code == 302
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        assert option.closed and not option.close_at_deadline and not option.confirmation_required
        assert option.section_contacts == {"*": "Amnesty International"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Amnesty International", "Line 1"),
        ("*: one\nXX: two", "'XX' is not a two-letter country code"),
        ("*: one\n*: two", "* is given twice"),
        ("GB: " + "x" * 600, "at most 500 characters"),
        ("*: ok\n" + "\u202e<script>: x", "Line 2"),
        ("*: ok\n" * 4_000, "* is given twice"),
    ],
    ids=["no code", "unknown code", "twice", "too long", "odd unicode", "24 KB"],
)
def test_bad_section_contacts_are_refused_with_the_line_and_nothing_changes(
    app, admin_client, text, problem
):
    _options(app, section_contacts={"*": "kept"})
    reply = _switches(admin_client, paused="y", section_contacts=text)
    assert reply.status_code == 422
    html = reply.get_data(as_text=True)
    assert problem.replace("'", "&#39;") in html or problem in html
    assert "<script>" not in html
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        assert option.section_contacts == {"*": "kept"} and not option.paused


# --- a campaign that closes between writing and confirming -------------------------------


def test_an_appeal_confirmed_after_its_campaign_closed_is_not_sent(app, client, smtp, work):
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    token = _token(app)
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    _options(app, closed=True)

    reply = client.get(f"/confirm/{token}")
    assert reply.status_code == 410
    assert "the campaign closed before you confirmed it" in reply.get_data(as_text=True)
    reply = client.post(f"/confirm/{token}", data={"csrf_token": csrf_token(page), "submit": "y"})
    assert reply.status_code == 410
    assert "Nothing went in your name" in reply.get_data(as_text=True)
    reply = client.post(f"/api/v1/confirm/{token}")
    assert reply.status_code == 410 and reply.get_json()["error"] == "campaign_closed"

    assert _appeal(app).status == Status.AWAITING_CONFIRMATION
    work()
    assert _mails_to(smtp, MINISTER) == []


def test_another_campaign_closing_does_not_stop_confirmations_here(app, client, smtp, work):
    """A confirm names the campaigns still open in the statement that moves the appeal
    (one statement, no transaction around it): a closed campaign next door stops its
    own appeals, not this one's."""
    campaigns = app.extensions["campaigns"]
    campaigns["second-action"] = dataclasses.replace(campaigns[SLUG], slug="second-action")
    try:
        with app.app_context():
            db.session.add(CampaignOption(slug="second-action", closed=True))
            db.session.commit()
        assert client.post(APPEALS_URL, json=supporter()).status_code == 202
        work()
        assert client.post(f"/api/v1/confirm/{_token(app)}").status_code == 200
        work()
        assert len(_mails_to(smtp, MINISTER)) == 1
    finally:
        del campaigns["second-action"]


def test_a_paused_campaign_still_lets_its_supporters_confirm(app, client, smtp, work):
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    _options(app, paused=True)
    assert client.post(f"/api/v1/confirm/{_token(app)}").status_code == 200
    work()
    assert len(_mails_to(smtp, MINISTER)) == 1


# --- the used confirmation link ----------------------------------------------------------


def test_a_used_confirmation_link_says_the_appeal_was_confirmed(app, client, smtp, work):
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    token = _token(app)
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    form = {"csrf_token": csrf_token(page), "submit": "Send my appeal"}
    assert client.post(f"/confirm/{token}", data=form).status_code == 200
    public_id = _appeal(app).public_id

    for reply in (client.get(f"/confirm/{token}"), client.post(f"/confirm/{token}", data=form)):
        html = reply.get_data(as_text=True)
        assert reply.status_code == 200
        assert "You have already confirmed this appeal" in html
        assert "does not work" not in html
        assert 'data-status="queued"' in html
        assert reply.headers["Cache-Control"] == "no-store"
    # The appeal went once.
    work()
    assert len(_mails_to(smtp, MINISTER)) == 1
    status, html, _ = _page(client, f"/confirm/{token}")
    assert status == 200 and 'data-status="sent"' in html
    assert f'href="/appeal/{public_id}/letter.pdf"' not in html  # the status page only

    # A link that never was one still says so.
    status, html, _ = _page(client, "/confirm/" + "A" * 43)
    assert status == 404 and "already confirmed" not in html


def test_a_cancelled_appeal_that_was_never_confirmed_is_not_called_confirmed(app, client, work):
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    with app.app_context():
        from campaign.appeals import steer

        assert steer("cancel", "manager@example.org") == 1
    status, html, _ = _page(client, f"/confirm/{_token(app)}")
    assert status == 404 and "already confirmed" not in html


# --- the status page ---------------------------------------------------------------------


def _status_page(client: Any, public_id: str, **headers: Any) -> str:
    reply = client.get(f"/appeal/{public_id}", headers=headers)
    assert reply.status_code == 200
    assert reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["X-Robots-Tag"] == "noindex"
    return reply.get_data(as_text=True)


def _no_personal_data(html: str) -> None:
    for private in ("ana@example.org", "Ana García", "Ana Garc", "actúe ya"):
        assert private not in html, private


def test_the_status_page_follows_the_appeal_through_every_state(app, client, smtp, work):
    reply = client.post(APPEALS_URL, json=supporter(), headers={"Accept-Language": "es"})
    assert reply.status_code == 202
    public_id = _appeal(app).public_id

    html = _status_page(client, public_id)
    assert 'data-status="awaiting_confirmation"' in html
    assert "Waiting for your confirmation" in html and "Nothing has been sent" in html
    _no_personal_data(html)

    work()
    # The confirmation mail links to it, in the supporter's interface language.
    [confirmation] = _mails_to(smtp, "ana@example.org")
    assert f"http://appeals.test/appeal/{public_id}?lang=es" in _text(confirmation)
    assert f'href="http://appeals.test/appeal/{public_id}?lang=es"' in _html(confirmation)

    reply = client.post(f"/api/v1/confirm/{_token(app)}")
    assert reply.get_json()["status_page"] == f"http://appeals.test/appeal/{public_id}"
    html = _status_page(client, public_id)
    assert 'data-status="queued"' in html and "in the next few minutes" in html

    work()
    html = _status_page(client, public_id, **{"Accept-Language": "fr"})
    assert 'data-status="sent"' in html and 'lang="fr"' in html
    copies = re.search(r'<table id="copies">(.*?)</table>', html, re.S)
    assert copies and 'class="copy-accepted"' in copies.group(1)
    assert "Alberto Ruiz-Gallard" in copies.group(1)  # the minister, as the letter names him
    _no_personal_data(html)
    assert "250" not in copies.group(1)  # no relay replies

    # Erased on request: the page says so, and still where it went.
    with app.app_context():
        assert erase_supporter("ana@example.org", "manager@example.org") == 1
    html = _status_page(client, public_id)
    assert 'id="erased"' in html and 'data-status="sent"' in html
    assert client.get(f"/api/v1/appeals/{public_id}").get_json()["erased"] is True


def test_failed_held_and_cancelled_appeals_say_so(app, client, smtp, work):
    from campaign.appeals import steer

    smtp.handler.rcpt_replies[MINISTER] = "550 5.1.1 <ana@example.org> no such user"
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    client.post(f"/api/v1/confirm/{_token(app)}")
    work()
    failed = _appeal(app)
    assert failed.status == Status.FAILED
    html = _status_page(client, failed.public_id)
    assert 'data-status="failed"' in html and "Not delivered" in html
    assert 'class="copy-failed"' in html
    _no_personal_data(html)  # the relay's words quoted the address: not shown

    _options(app, confirmation_required=False)
    for email in ("held@example.org", "cancelled@example.org"):
        assert client.post(APPEALS_URL, json=supporter(email=email)).status_code == 202
    with app.app_context():
        held, cancelled = (
            _appeal(app, e).id for e in ("held@example.org", "cancelled@example.org")
        )
        assert steer("hold", "m@example.org", [held]) == 1
        assert steer("cancel", "m@example.org", [cancelled]) == 1
    html = _status_page(client, _appeal(app, "held@example.org").public_id)
    assert 'data-status="held"' in html and "Held for now" in html
    html = _status_page(client, _appeal(app, "cancelled@example.org").public_id)
    assert 'data-status="cancelled"' in html and "nothing was sent in your name" in html


@pytest.mark.parametrize(
    "public_id",
    [
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
        "x" * 100_000,
        "%0d%0aSet-Cookie:%20a=b",
        "00000000-0000-4000-8000-00000000000%C3%B1",
    ],
    ids=["unknown", "junk", "100 KB", "crlf", "unicode"],
)
def test_a_wrong_status_link_is_404(app, client, public_id):
    reply = client.get(f"/appeal/{public_id}")
    assert reply.status_code == 404
    assert "Set-Cookie" not in reply.headers


def test_pacing_gives_a_time_instead_of_the_next_few_minutes(app, client, smtp, work):
    """30 appeals queued ahead at 60 an hour to the same address: about half an hour."""
    app.config["PACING_ENABLED"] = True
    _options(app, confirmation_required=False)
    for i in range(30):
        assert (
            client.post(APPEALS_URL, json=supporter(email=f"s{i}@example.org")).status_code == 202
        )
    _options(app, confirmation_required=True)
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    token = _token(app)
    page = client.get(f"/confirm/{token}").get_data(as_text=True)
    reply = client.post(f"/confirm/{token}", data={"csrf_token": csrf_token(page), "submit": "y"})
    html = reply.get_data(as_text=True)
    assert reply.status_code == 200
    assert "next few minutes" not in html
    assert "at a steady pace" in html and "in 30 minutes" in html
    assert 'id="status-link"' in html

    public_id = _appeal(app).public_id
    html = _status_page(client, public_id)
    assert "next few minutes" not in html and "in 30 minutes" in html

    # The batch sends the first and gives each of the others its slot, a minute apart:
    # this one, the 31st, in half an hour. The page tells that time.
    work()
    assert len(_mails_to(smtp, MINISTER)) == 1
    paced = _appeal(app)
    assert paced.status == Status.QUEUED
    assert timedelta(minutes=29) < paced.next_attempt_at - utcnow() <= timedelta(minutes=30)
    html = _status_page(client, public_id)
    assert "next few minutes" not in html and "in 30 minutes" in html


# --- the receipt -------------------------------------------------------------------------


def test_one_receipt_with_the_letter_and_the_status_link_in_the_supporters_language(
    app, client, smtp, work
):
    reply = client.post(
        APPEALS_URL,
        json=supporter(message="Bitte handeln Sie <jetzt>."),
        headers={"Accept-Language": "de-DE"},
    )
    assert reply.status_code == 202
    work()
    client.post(f"/api/v1/confirm/{_token(app)}")
    work()  # delivers the appeal
    [appeal_mail] = _mails_to(smtp, MINISTER)
    appeal = _appeal(app)
    assert _receipts(smtp) == []  # not before the dispatcher has seen the acceptance

    work()  # the dispatcher sees it; the receipt goes
    [receipt] = _receipts(smtp)
    text, html = _text(receipt), _html(receipt)
    assert f"http://appeals.test/appeal/{appeal.public_id}?lang=de" in text
    assert '<html lang="de">' in html
    with app.app_context(), force_locale("de"):
        greeting = gettext("Hello %(name)s,", name="Ana García")
    with app.app_context(), force_locale("en"):
        assert gettext("Hello %(name)s,", name="Ana García") != greeting  # German indeed
    assert greeting in text
    # The letter that went, word for word, and the sentence escaped in HTML.
    letter = _text(appeal_mail)
    assert letter.strip() in text
    assert "Bitte handeln Sie &lt;jetzt&gt;." in html
    assert receipt.message["To"].addresses[0].addr_spec == "ana@example.org"
    assert receipt.message["Reply-To"] is None
    with app.app_context():
        assert db.session.get(Appeal, appeal.id).receipt_sent_at is not None

    # Never twice: more passes, a fresh dispatcher (its catch-up), the job run again.
    work()
    work()
    with app.app_context():
        dispatcher = Dispatcher()
        dispatcher.sweep()
        db.session.remove()
        from campaign.delivery.jobs import send_receipts

        assert send_receipts([appeal.id])["claimed"] == 0
    work()
    assert len(_receipts(smtp)) == 1


def test_a_receipt_after_a_recovery_goes_once(app, client, smtp, work, redis):
    """The worker died after the relay took the appeal: the dispatcher records it from the
    acceptance journal, and the supporter gets one receipt."""
    app.config["SENDING_LEASE_SECONDS"] = 1
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    client.post(f"/api/v1/confirm/{_token(app)}")
    with app.app_context():
        appeal_id = _appeal(app).id
        batch = Batch("job-that-dies", Journal(redis))
        [attempt] = batch.claim([appeal_id])
        accepted = Copy(MINISTER, "Minister", "to", Delivery.ACCEPTED, 1, "250 ok", None, utcnow())
        batch.journal.note(appeal_id, to_note([accepted]))
        batch.journal.settle()
        # ...and here the worker was killed; its heartbeat stops.
        db.session.execute(
            update(Appeal)
            .where(Appeal.id == appeal_id)
            .values(updated_at=utcnow() - timedelta(seconds=60))
        )
        db.session.commit()
        db.session.remove()
    work()  # recovery: sent, from the journal
    assert _appeal(app).status == Status.SENT
    work()
    work()
    assert len(_receipts(smtp)) == 1
    assert _mails_to(smtp, MINISTER) == []  # the relay had it; nothing went twice


def test_a_receipt_refused_for_now_goes_later_once_and_one_refused_for_good_never(
    app, client, smtp, work
):
    _sent_appeal(app, client, work)
    smtp.handler.data_replies.append("451 4.3.0 try again later")
    work()
    assert _receipts(smtp) == []
    appeal = _appeal(app)
    assert appeal.receipt_sent_at is None  # given back
    work()  # the watch has read that event: only its catch-up looks again
    assert _receipts(smtp) == []
    with app.app_context():
        watch = receipts.Watch()
        rows, _ = watch.due()
        assert [r[0] for r in rows] == [appeal.id]
    # A new dispatcher catches up at once.
    app.extensions.pop("dispatcher", None)
    work()
    assert len(_receipts(smtp)) == 1
    work()
    assert len(_receipts(smtp)) == 1

    _sent_appeal(app, client, work, email="bea@example.org")
    smtp.handler.data_replies.append("550 5.7.1 no")
    work()
    app.extensions.pop("dispatcher", None)
    work()
    assert _receipts(smtp, "bea@example.org") == []
    bea = _appeal(app, "bea@example.org")
    assert bea.receipt_sent_at is not None
    with app.app_context():
        reasons = db.session.scalars(
            db.select(AppealEvent.reason).where(AppealEvent.appeal_id == bea.id)
        ).all()
    assert any(r and r.startswith("receipt refused: 550") for r in reasons)


def test_no_receipt_for_synthetic_unchecked_erased_or_long_ago(app, client, smtp, work):
    """A receipt carries the letter: only an address that confirmed through its link
    gets one, while it is news. One appeal that qualifies shows the receipts work."""
    with app.app_context():
        create_synthetic(SLUG, 5)
    work()
    assert len(_mails_to(smtp, MINISTER)) == 5
    _sent_appeal(app, client, work, email="erased@example.org")
    with app.app_context():
        erase_supporter("erased@example.org", "manager@example.org")
    old = _sent_appeal(app, client, work, email="old@example.org")
    with app.app_context():
        db.session.execute(
            update(Recipient)
            .where(Recipient.appeal_id == old.id)
            .values(accepted_at=utcnow() - receipts.RECEIPT_WITHIN - timedelta(minutes=1))
        )
        db.session.commit()
    # Confirmation switched off: the address was never checked; anyone could have typed it.
    _options(app, confirmation_required=False)
    unchecked = supporter(email="victim@example.org", message="Buy cheap watches")
    assert client.post(APPEALS_URL, json=unchecked).status_code == 202
    _options(app, confirmation_required=True)
    control = _sent_appeal(app, client, work, email="control@example.org")
    app.extensions.pop("dispatcher", None)  # a new dispatcher looks at everything
    work()
    work()
    assert _mails_to(smtp, "victim@example.org") == []
    for email in ("erased@example.org", "old@example.org"):
        assert all("/confirm/" in _text(m) for m in _mails_to(smtp, email))  # the link only
    assert len(_receipts(smtp, "control@example.org")) == 1
    with app.app_context():
        receipted = db.session.scalars(
            db.select(Appeal.id).where(Appeal.receipt_sent_at.is_not(None))
        ).all()
    assert receipted == [control.id]


def test_an_appeal_sent_in_test_mode_gets_no_receipt_and_its_page_says_so(app, client, smtp, work):
    """In test mode the appeal goes to a staff address: nothing may tell its writer that
    the minister has it."""
    from campaign import sending

    with app.app_context():
        create_user("staff@example.org", Role.MANAGER, "correct horse battery staple")
        assert sending.set_test_mode(SLUG, "staff@example.org", "admin@example.org")
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    assert client.post(f"/api/v1/confirm/{_token(app)}").status_code == 200
    work()
    assert len(_mails_to(smtp, "staff@example.org")) == 1 and _mails_to(smtp, MINISTER) == []
    app.extensions.pop("dispatcher", None)
    work()
    work()
    assert _receipts(smtp) == []
    html = _status_page(client, _appeal(app).public_id)
    assert 'id="test-run"' in html and "Test run: not sent to this addressee" in html
    assert "Sent on" not in html


def test_the_watch_reads_each_event_once_and_waits_for_the_lag(app, client, smtp, work):
    with app.app_context():
        watch = receipts.Watch()
        assert watch.due(lag=0.0)[0] == []  # the catch-up: nothing owed yet
        watch.advance(watch.due(lag=0.0)[1])
    appeal = _sent_appeal(app, client, work)
    with app.app_context():
        rows, up_to = watch.due(lag=3600.0)  # too young to read
        assert rows == []
        rows, up_to = watch.due(lag=0.0)
        assert rows == [(appeal.id, SLUG)]
        watch.advance(up_to)
        assert watch.due(lag=0.0)[0] == []
        report = Report()
        dispatcher = Dispatcher()
        dispatcher.dispatch_receipts(report, lag=0.0)
        assert report.receipts == 1  # a new dispatcher's catch-up finds it


# --- the public count --------------------------------------------------------------------


def test_the_campaign_page_counts_appeals_sent_from_a_brief_cache(app, client, work, monkeypatch):
    _, html, _ = _page(client, PAGE)
    assert 'id="sent-count"' not in html  # none yet: no "0 appeals"
    _sent_appeal(app, client, work, email="a@example.org")
    _sent_appeal(app, client, work, email="b@example.org")
    with app.app_context():
        create_synthetic(SLUG, 3)  # load tests are not supporters
    work()
    app.extensions.pop("sent_counts", None)
    _, html, _ = _page(client, PAGE)
    assert re.search(r'id="sent-count"><strong>2 appeals sent so far', html)

    # A third goes; the page keeps the count it has for a few seconds...
    _sent_appeal(app, client, work, email="c@example.org")
    _, html, _ = _page(client, PAGE)
    assert "2 appeals sent so far" in html
    # ...and counts again once it is older than that.
    slug_cache = app.extensions["sent_counts"]
    expires, count = slug_cache[SLUG]
    slug_cache[SLUG] = (expires - progress.COUNT_SECONDS - 1, count)
    _, html, _ = _page(client, PAGE)
    assert "3 appeals sent so far" in html
