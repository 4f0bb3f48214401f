"""The campaign office's console (/manage): the overview per campaign, the engine and
pacing, the ETA against the deadline, why queued appeals wait, one appeal's page,
search and filters, bulk actions, the streamed export, and pages whose cost does not
grow with the number of appeals. On real parts: Redis, an SMTP server on loopback, a
real RQ worker, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import html as htmlmod
import io
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from rq import Worker
from sqlalchemy import event

from campaign import search
from campaign.db import db, utcnow
from campaign.delivery.dispatcher import sweep
from campaign.delivery.pacing import Pacer, pacing_rules
from campaign.models import Appeal, AppealEvent, AuditEvent, CampaignOption, Diplomat, Role, Status
from campaign.synthetic import create_synthetic
from campaign.users import create_user
from helpers import APPEALS_URL, csrf_token, supporter

MANAGER = "manager@example.org"
PASSWORD = "correct horse battery staple"
SLUG = "pavlov-extradition"
EMBASSY = "emb.londres@maec.example.org"


@pytest.fixture
def manager(app: Any, client: Any) -> Any:
    with app.app_context():
        create_user(MANAGER, Role.MANAGER, PASSWORD)
        db.session.add(CampaignOption(slug=SLUG, confirmation_required=False))
        db.session.commit()
    token = csrf_token(client.get("/login").get_data(as_text=True))
    reply = client.post(
        "/login", data={"csrf_token": token, "email": MANAGER, "password": PASSWORD}
    )
    assert reply.status_code == 302
    return client


def page(client: Any, url: str, status: int = 200) -> str:
    reply = client.get(url)
    assert reply.status_code == status, (url, reply.status_code)
    return reply.get_data(as_text=True)


def text_of(html: str) -> str:
    """The page's words, tags removed, entities decoded, spaces collapsed."""
    return " ".join(htmlmod.unescape(re.sub(r"<[^>]+>", " ", html)).split())


def section(html: str, element_id: str) -> str:
    """The inner HTML of the element with this id (nested elements of its kind too)."""
    start = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>', html)
    assert start, f"no #{element_id}"
    tag, depth = start.group(1), 1
    for found in re.finditer(rf"<(/?){tag}\b[^>]*>", html[start.end() :]):
        depth += -1 if found.group(1) else 1
        if depth == 0:
            return html[start.end() : start.end() + found.start()]
    raise AssertionError(f"#{element_id} is not closed")


def ids_in(html: str) -> list[int]:
    """Appeal numbers linked from a page, in order."""
    return [int(i) for i in re.findall(r'href="/manage/appeals/(\d+)"', html)]


def appeal_id(app: Any, email: str) -> int:
    with app.app_context():
        found = db.session.scalar(db.select(Appeal.id).filter_by(email=email))
        assert found is not None
        return int(found)


def status_of(app: Any, email: str) -> str:
    with app.app_context():
        return str(db.session.scalar(db.select(Appeal.status).filter_by(email=email)))


def submit(client: Any, **fields: Any) -> None:
    reply = client.post(APPEALS_URL, json=supporter(**fields))
    assert reply.status_code == 202, reply.get_json()


def add_embassy(app: Any) -> None:
    with app.app_context():
        db.session.add(
            Diplomat(target_state="ES", country="GB", name="Embassy of Spain", email=EMBASSY)
        )
        db.session.commit()


def with_deadline(app: Any, deadline: date | None) -> None:
    """The campaign as its file would say with this deadline (campaigns are data)."""
    campaigns = app.extensions["campaigns"]
    campaigns[SLUG] = dataclasses.replace(campaigns[SLUG], deadline=deadline)


# --- the overview --------------------------------------------------------------------------


def test_overview_per_campaign(app, manager, smtp, work):
    """Counts per status, deliveries per hour as an SVG chart, letters by language and
    supporters by country, each linking to its appeals."""
    submit(manager, email="es1@example.org", language="es", country="GB")
    submit(manager, email="es2@example.org", language="es", country="DE")
    submit(manager, email="en1@example.org", language="en", country="GB")
    work()
    smtp.handler.rcpt_replies = {"ministro@mju.es": "550 5.1.1 mailbox unavailable"}
    submit(manager, email="fr1@example.org", language="fr", country="FR")
    work()
    assert status_of(app, "fr1@example.org") == Status.FAILED

    html = page(manager, "/manage")
    card = section(html, f"live-campaign-{SLUG}")
    words = text_of(card)
    assert words.startswith("Torture risk for dissident if extradited open")
    assert re.search(r'data-campaign-status="sent">3<', card)
    assert re.search(r'data-campaign-status="failed">1<', card)
    # The chart: 24 bars, the current hour's holding the 3 appeals sent.
    chart = re.search(r'<svg class="chart hourly".*?</svg>', card, re.S).group(0)
    assert 'role="img"' in chart and "3 in the last 24 hours" in chart
    assert len(re.findall(r"<rect ", chart)) == 24
    now = datetime.now(UTC)
    assert (
        f"{now:%H}:00 UTC: 3 sent" in chart
        or f"{now - timedelta(minutes=1):%H}:00 UTC: 3 sent" in chart
    )
    # Breakdowns, most first, each a link to the search.
    languages = re.search(r'aria-label="Letters by language: ([^"]*)"', card).group(1)
    assert languages == "Spanish 2, English 1, French 1"
    countries = re.search(r'aria-label="Supporters by country: ([^"]*)"', card).group(1)
    assert countries.startswith("United Kingdom 2, ")
    assert f'href="/manage/appeals?campaign={SLUG}&amp;country=GB"' in card
    # The JSON the page refreshes from says the same.
    live = manager.get("/manage/live.json").get_json()
    assert live["campaigns"][SLUG]["counts"]["sent"] == 3
    assert live["counts"]["failed"] == 1

    # The same card, but for its forms' CSRF tokens, which carry the second they were
    # made (the page and the JSON may be rendered a second apart).
    def tokenless(html: str) -> str:
        stripped, tokens = re.subn(r'(name="csrf_token"[^>]*?value=")[^"]*', r"\1", html)
        assert tokens  # the card has forms: there was something to take out
        return stripped.strip()

    assert tokenless(live["sections"][f"live-campaign-{SLUG}"]) == tokenless(card)


def test_the_overview_refreshes_from_a_static_script_without_inline_code(app, manager):
    html = page(manager, "/manage")
    assert 'data-live-url="/manage/live.json"' in html
    assert '<script src="/static/console.js" defer></script>' in html
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None  # no inline script
    assert "Refresh</a>" in html  # without JavaScript, a link does it
    with manager.get("/static/console.js") as script:
        assert script.status_code == 200 and "fetch(url" in script.get_data(as_text=True)
    with manager.get("/static/console.css") as style:
        assert style.status_code == 200


def test_refreshing_in_the_background_does_not_keep_a_session_alive(app, manager):
    """The overview left open on an unattended screen still signs out when idle."""
    app.config["SESSION_IDLE_MINUTES"] = 3 / 60  # three seconds: slack for a loaded machine
    assert manager.get("/manage/live.json").status_code == 200
    time.sleep(1.5)
    assert manager.get("/manage/live.json").status_code == 200  # 1.5 s idle: still in
    time.sleep(1.8)
    # 3.3 s since the last real request: the refresh did not count as activity.
    reply = manager.get("/manage/live.json")
    assert reply.status_code == 302 and urlsplit(reply.headers["Location"]).path == "/login"


def test_engine_queues_workers_and_pacing_per_domain(app, manager, redis):
    app.config["PACING_ENABLED"] = True
    add_embassy(app)
    submit(manager, email="a@example.org", country="GB")
    submit(manager, email="b@example.org", country="DE")
    with app.app_context():
        sweep()  # hands both to a job: the queue holds it until a worker comes
        db.session.remove()
    worker = Worker(["appeals"], connection=redis, name="console-test-worker")
    worker.register_birth()
    try:
        html = page(manager, "/manage")
    finally:
        worker.register_death()
    engine = section(html, "live-engine")
    queues = dict(re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td>", engine))
    assert queues == {"appeals": "1", "supporters": "0", "receipts": "0"}
    assert "1 live:" in text_of(engine) and "console-test-worker" in engine
    rows = {
        r[0]: r[1:]
        for r in re.findall(
            r'<tr><td><a href="[^"]*">([^<]+)</a></td><td>([^<]+)</td><td>([^<]+)</td>'
            r"\s*<td>(.*?)</td><td>(\d+)</td></tr>",
            engine,
            re.S,
        )
    }
    assert rows["mju.es"][0] == "120" and rows["mju.es"][3] == "2"
    assert rows["maec.example.org"][3] == "1"  # only the appeal from GB goes there
    assert rows["mju.es"][2] == "now"  # never used: a full bucket
    # Take the ministry's token, as a worker sending to it would: the next send waits.
    with app.app_context():
        Pacer(redis, pacing_rules()).waits(["ministro@mju.es"], "Europe/Madrid", utcnow())
    engine = section(page(manager, "/manage"), "live-engine")
    row = re.search(
        r">mju\.es</a></td><td>120</td><td>([\d.]+)</td>\s*<td>(.*?)</td>", engine, re.S
    )
    assert float(row.group(1)) < 1
    assert "UTC (in " in text_of(row.group(2)) or "UTC (now)" in text_of(row.group(2))


def test_a_broker_that_does_not_answer_is_said_not_raised(app, manager):
    from campaign.delivery.queue import rq

    with app.app_context():
        pool = rq.connection().connection_pool
        saved = pool.connection_kwargs.get("port")
        pool.connection_kwargs["port"] = 1  # nothing listens there
        pool.disconnect()
    try:
        html = page(manager, "/manage")
    finally:
        pool.connection_kwargs["port"] = saved
        pool.disconnect()
    assert "the broker (Redis) does not answer" in html
    assert "Appeals stay safe in the database" in html


# --- the ETA against the deadline -------------------------------------------------------------


def test_eta_against_the_deadline_with_a_link_to_the_pacing(app, manager, redis):
    """3,000 appeals to one ministry at 60 an hour for its address take 50 hours: with
    the deadline tomorrow that is too late, and the page says so before, not after."""
    app.config["PACING_ENABLED"] = True
    with app.app_context():
        create_synthetic(SLUG, 3000)
    start = utcnow()
    with_deadline(app, date.today() + timedelta(days=5))
    html = page(manager, "/manage")
    card = section(html, f"live-campaign-{SLUG}")
    assert 'data-eta="ok"' in card and 'class="warning"' not in card, text_of(card)
    words = text_of(card)
    assert "3000 waiting: the last should go" in words
    assert "Slowest: ministro@mju.es: 3000 waiting at 60 an hour" in words
    finish = datetime.fromisoformat(
        manager.get("/manage/live.json").get_json()["campaigns"][SLUG]["finishes_at"]
    )
    hours = (finish - start).total_seconds() / 3600
    assert 49.9 < hours < 50.1, hours

    with_deadline(app, date.today() + timedelta(days=1))
    card = section(page(manager, "/manage"), f"live-campaign-{SLUG}")
    warning = re.search(r'<p class="warning" data-eta="late">(.*?)</p>', card, re.S).group(1)
    assert "after the deadline" in text_of(warning)
    assert '<a href="/admin#pacing">pacing settings</a>' in warning
    assert manager.get("/manage/live.json").get_json()["campaigns"][SLUG]["late"] is True

    # Twice the rate for the address and the domain: 25 hours, in time for a deadline
    # the day after tomorrow (at least 48 hours away).
    with_deadline(app, date.today() + timedelta(days=2))
    app.config["PACING_PER_ADDRESS_PER_HOUR"] = 120.0
    app.config["PACING_PER_DOMAIN_PER_HOUR"] = 240.0
    card = section(page(manager, "/manage"), f"live-campaign-{SLUG}")
    assert 'data-eta="ok"' in card and "at 120 an hour" in text_of(card)

    # The seed's own deadline passed long ago: said as such.
    with_deadline(app, date(2013, 9, 5))
    card = section(page(manager, "/manage"), f"live-campaign-{SLUG}")
    assert "The deadline passed" in text_of(card) and "3000 appeals still wait" in text_of(card)


def test_eta_with_pacing_off_and_with_nothing_waiting(app, manager):
    with_deadline(app, date.today() + timedelta(days=1))
    card = text_of(section(page(manager, "/manage"), f"live-campaign-{SLUG}"))
    assert "Nothing is waiting to be sent." in card
    with app.app_context():
        create_synthetic(SLUG, 5)
    card = text_of(section(page(manager, "/manage"), f"live-campaign-{SLUG}"))
    assert "5 waiting. Pacing is off" in card


# --- why queued appeals wait, with readable times ---------------------------------------------


def test_queued_appeals_say_why_they_wait(app, manager, smtp, work, redis):
    app.config["PACING_ENABLED"] = True
    app.config["PACING_PER_DOMAIN_PER_HOUR"] = 2.0  # one token now, the next in 30 min
    submit(manager, email="first@example.org")
    submit(manager, email="paced@example.org")
    work()
    assert status_of(app, "first@example.org") == Status.SENT
    assert status_of(app, "paced@example.org") == Status.QUEUED
    paced = page(manager, f"/manage/appeals/{appeal_id(app, 'paced@example.org')}")
    waits = text_of(re.search(r'<p class="notice" id="waits">(.*?)</p>', paced, re.S).group(1))
    assert re.fullmatch(
        r"Waiting: paced: its turn comes \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in (29|30) min\) ?\.",
        waits,
    ), waits

    app.config["PACING_ENABLED"] = False
    smtp.handler.rcpt_replies = {"ministro@mju.es": "451 4.7.1 greylisted, try again later"}
    submit(manager, email="grey@example.org")
    work()
    assert status_of(app, "grey@example.org") == Status.RETRYING
    results = page(manager, "/manage/appeals?status=retrying")
    assert re.search(
        r"refused for now \(ministro@mju\.es: 451 4\.7\.1 greylisted, try again later\); "
        r"next try \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in \d+ (s|min)\)",
        text_of(results),
    )
    token = csrf_token(results)
    manager.post(
        "/manage/steer",
        data={
            "csrf_token": token,
            "action": "hold",
            "appeal_id": appeal_id(app, "grey@example.org"),
        },
    )
    held = text_of(page(manager, "/manage/appeals?status=held"))
    assert f"hold by {MANAGER}" in held


def test_the_mail_capture_shows_readable_times(capture_app_client):
    html = capture_app_client.get("/manage/mail").get_data(as_text=True)
    [received] = re.findall(r'<tr><td><time datetime="([^"]+)">([^<]+)</time></td>', html)
    moment = datetime.fromisoformat(received[0])
    assert abs((moment - datetime.now(UTC)).total_seconds()) < 120
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \((now|\d+ s ago|\d+ min ago)\)", received[1]
    )
    assert not re.search(r"<td>\d{10}</td>", html)  # no epoch numbers


@pytest.fixture
def capture_app_client(backend, database_urls, redis, redis_url, tmp_path) -> Iterator[Any]:
    from aiosmtpd.controller import Controller

    from campaign.capture import MaildirHandler
    from conftest import capture_config, fresh_app, run_jobs

    config = capture_config(database_urls[backend], redis_url, tmp_path)
    with fresh_app(config) as app:
        controller = Controller(
            MaildirHandler(config["MAIL_CAPTURE_DIR"]),
            hostname="127.0.0.1",
            port=config["MAIL_CAPTURE_PORT"],
        )
        controller.start()
        try:
            client = app.test_client()
            with app.app_context():
                create_user(MANAGER, Role.MANAGER, PASSWORD)
            token = csrf_token(client.get("/login").get_data(as_text=True))
            client.post(
                "/login", data={"csrf_token": token, "email": MANAGER, "password": PASSWORD}
            )
            client.post(APPEALS_URL, json=supporter(email="captured@example.org"))
            run_jobs(app, redis)
            yield client
        finally:
            controller.stop()


# --- one appeal ----------------------------------------------------------------------------


def test_appeal_page_shows_copies_history_replies_and_the_letter(app, manager, smtp, work):
    add_embassy(app)
    smtp.handler.rcpt_replies = {EMBASSY: "550 5.1.1 no such mailbox at the embassy"}
    submit(
        manager,
        name="Zoë O'Brien",
        email="zoe@example.org",
        language="en",
        country="GB",
        message="I ask you to act now.",
    )
    work()
    assert status_of(app, "zoe@example.org") == Status.SENT
    html = page(manager, f"/manage/appeals/{appeal_id(app, 'zoe@example.org')}")
    copies = re.search(r'<table id="recipients">(.*?)</table>', html, re.S).group(1)
    assert '<tr data-address="ministro@mju.es"><td>to</td>' in copies
    assert "accepted" in copies and "250 " in copies
    assert f'<tr data-address="{EMBASSY}"><td>cc</td>' in copies
    assert "550 5.1.1 no such mailbox at the embassy" in copies
    history = text_of(re.search(r'<table id="events">(.*?)</table>', html, re.S).group(1))
    assert "confirmation switched off for this campaign" in history
    assert re.search(
        r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \((now|\d+ s ago)\) sending sent copy to "
        + re.escape(EMBASSY)
        + r" refused: 550",
        history,
    )
    # The letter, written again as the worker wrote it.
    letter = htmlmod.unescape(
        re.search(r'<div class="letter" id="letter">(.*?)</div>', html, re.S).group(1)
    )
    sent = smtp.received[0].message.get_body(("plain",)).get_content()
    assert letter.strip() == sent.replace("\r\n", "\n").strip()
    subject = htmlmod.unescape(re.search(r'<dd id="letter-subject">(.*?)</dd>', html).group(1))
    assert subject == smtp.received[0].message["Subject"]


def test_an_erased_appeal_has_no_letter_any_more(app, manager, work):
    submit(manager, email="gone@example.org")
    work()
    number = appeal_id(app, "gone@example.org")
    token = csrf_token(page(manager, "/manage/erase"))
    manager.post("/manage/erase", data={"csrf_token": token, "email": "gone@example.org"})
    html = page(manager, f"/manage/appeals/{number}")
    assert "The letter is no longer kept" in html
    assert 'id="letter"' not in html and "Ana Garc" not in html
    assert page(manager, "/manage/appeals/999999", 404)


# --- search and filters --------------------------------------------------------------------


@pytest.fixture
def population(app, manager, smtp, work):
    """Eight appeals: languages, countries and states of every kind."""
    add_embassy(app)
    people = [
        ("ana@example.org", "es", "GB"),
        ("ben@example.org", "en", "GB"),
        ("chloe@example.fr", "fr", "FR"),
        ("dieter@example.de", "de", "DE"),
        ("eva@example.de", "de", "DE"),
    ]
    for email, language, country in people:
        submit(manager, email=email, language=language, country=country)
    work()
    smtp.handler.rcpt_replies = {"ministro@mju.es": "550 5.1.1 mailbox unavailable"}
    submit(manager, email="failed@example.org", language="es", country="GB")
    work()
    smtp.handler.rcpt_replies = {}
    submit(manager, email="queued@example.org", language="it", country="IT")
    submit(manager, email="queued2@example.nl", language="nl", country="GB")
    return manager


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"email": "EXAMPLE.DE"}, {"dieter@example.de", "eva@example.de"}),
        ({"email": "%"}, set()),  # a wildcard is a character, not "everything"
        ({"status": "failed"}, {"failed@example.org"}),
        ({"status": "queued"}, {"queued@example.org", "queued2@example.nl"}),
        ({"language": "DE"}, {"dieter@example.de", "eva@example.de"}),
        ({"country": "gb", "status": "sent"}, {"ana@example.org", "ben@example.org"}),
        # Mail to the embassy in London: only the appeals from the United Kingdom.
        (
            {"domain": "maec.example.org"},
            {"ana@example.org", "ben@example.org", "failed@example.org", "queued2@example.nl"},
        ),
        ({"domain": "@MJU.es", "language": "fr"}, {"chloe@example.fr"}),
        ({"domain": "nowhere.example"}, set()),
        ({"campaign": SLUG, "email": "queued"}, {"queued@example.org", "queued2@example.nl"}),
        ({"since": (date.today() + timedelta(days=1)).isoformat()}, set()),
        (
            {"until": (date.today() + timedelta(days=1)).isoformat(), "email": "ana@"},
            {"ana@example.org"},
        ),
        (
            {"dates": "sent", "since": date.today().isoformat(), "country": "DE"},
            {"dieter@example.de", "eva@example.de"},
        ),
        ({"dates": "sent", "since": date.today().isoformat(), "status": "queued"}, set()),
    ],
)
def test_search_filters(app, population, query, expected):
    html = page(population, "/manage/appeals?" + urlencode(query))
    table = re.search(r'<table id="results">(.*?)</table>', html, re.S)
    found = (
        set(re.findall(r'<span class="muted">([^<]+@[^<]+)</span>', table.group(1)))
        if table
        else set()
    )
    assert found == expected
    assert f"<strong>{len(expected)}</strong>" in html


def test_search_by_number_and_by_status_link_id(app, population):
    with app.app_context():
        number, public_id = db.session.execute(
            db.select(Appeal.id, Appeal.public_id).filter_by(email="eva@example.de")
        ).one()
    for value in (str(number), f"#{number}", public_id, public_id.upper()):
        html = page(population, "/manage/appeals?" + urlencode({"appeal": value}))
        assert ids_in(re.search(r'<table id="results">(.*?)</table>', html, re.S).group(1)) == [
            number
        ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("email", "x" * 100_000, "At most 254 characters."),
        ("email", "ana@example.org\r\nBcc: eve@example.org", "on one line"),
        ("appeal", "1 OR 1=1", "An appeal's number"),
        ("status", "sent'; DROP TABLE appeals; --", "Choose a status from the list."),
        ("campaign", "<script>alert(1)</script>", "Choose a campaign from the list."),
        ("country", "GBR", "Two letters, like GB."),
        ("language", "ß", "Two letters, like es."),
        ("domain", "mju.es/../admin", "A domain name, like mju.es."),
        ("domain", "\u202emju.es", "A domain name, like mju.es."),
        ("since", "5 September", "A date like 2026-09-05."),
        ("dates", "deleted", "Choose a date from the list."),
    ],
)
def test_hostile_filters_get_a_clear_message_and_keep_what_was_typed(
    app, manager, field, value, message
):
    html = page(manager, "/manage/appeals?" + urlencode({field: value}), 422)
    error = re.search(rf'<p class="error" id="{field}-error">(.*?)</p>', html)
    assert error and message in htmlmod.unescape(error.group(1))
    assert "<script>alert" not in html
    if field not in ("status", "campaign", "language", "dates"):  # a select shows its choices
        shown = re.search(rf'name="{field}" value="([^"]*)"', html).group(1)
        assert htmlmod.unescape(shown) == value.strip()
    assert 'id="results"' not in html


def test_search_pages_by_id_and_caps_its_count(app, manager, monkeypatch):
    with app.app_context():
        create_synthetic(SLUG, 120)
        numbers = sorted(db.session.scalars(db.select(Appeal.id)), reverse=True)
    html = page(manager, "/manage/appeals")
    seen = ids_in(re.search(r'<table id="results">(.*?)</table>', html, re.S).group(1))
    assert seen == numbers[:50] and "<strong>120</strong>" in html
    assert 'rel="prev"' not in html
    pages = [seen]
    while (older := re.search(r'href="([^"]+)" rel="next"', html)) is not None:
        html = page(manager, htmlmod.unescape(older.group(1)))
        pages.append(ids_in(re.search(r'<table id="results">(.*?)</table>', html, re.S).group(1)))
    assert [len(p) for p in pages] == [50, 50, 20]
    assert sum(pages, []) == numbers
    newer = htmlmod.unescape(re.search(r'href="([^"]+)" rel="prev"', html).group(1))
    back = page(manager, newer)
    assert (
        ids_in(re.search(r'<table id="results">(.*?)</table>', back, re.S).group(1))
        == numbers[50:100]
    )
    monkeypatch.setattr(search, "COUNT_CAP", 100)
    assert "<strong>More than 100</strong>" in page(manager, "/manage/appeals")


# --- acting on what was found ----------------------------------------------------------------


def confirm_form(html: str, action: str) -> dict[str, str]:
    from helpers import form_fields

    return form_fields(html, action)


def test_hold_all_queued_mail_to_one_domain_then_release_it(app, population, smtp, work):
    """ "All mail to the embassy in London": the appeals from GB, and no other."""
    query = {"domain": "maec.example.org", "status": "queued"}
    html = page(population, "/manage/appeals?" + urlencode(query))
    bulk = re.search(
        r'<form method="get" action="/manage/appeals/bulk"[^>]*>(.*?)</form>', html, re.S
    )
    assert dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', bulk.group(1))) == query
    confirm = page(population, "/manage/appeals/bulk?" + urlencode({**query, "action": "hold"}))
    assert "This will hold 1 appeal:" in text_of(confirm)
    assert status_of(app, "queued2@example.nl") == Status.QUEUED  # asking changed nothing
    reply = population.post(
        "/manage/appeals/bulk", data=confirm_form(confirm, "/manage/appeals/bulk")
    )
    assert reply.status_code == 302
    assert status_of(app, "queued2@example.nl") == Status.HELD
    assert status_of(app, "queued@example.org") == Status.QUEUED  # to Italy's supporters: untouched
    assert "Hold: 1 appeal." in page(population, reply.headers["Location"])
    with app.app_context():
        detail = db.session.scalar(db.select(AuditEvent.detail).filter_by(action="hold"))
        reason = db.session.scalar(
            db.select(AppealEvent.reason).where(AppealEvent.to_status == Status.HELD)
        )
    assert detail == "status queued, mail to maec.example.org: 1 moved"
    assert reason == f"hold by {MANAGER}"

    held = {"domain": "maec.example.org", "status": "held"}
    confirm = page(population, "/manage/appeals/bulk?" + urlencode({**held, "action": "release"}))
    population.post("/manage/appeals/bulk", data=confirm_form(confirm, "/manage/appeals/bulk"))
    assert status_of(app, "queued2@example.nl") == Status.QUEUED
    work()
    assert status_of(app, "queued2@example.nl") == Status.SENT


def test_bulk_retry_of_failed_appeals(app, population, work):
    confirm = page(population, "/manage/appeals/bulk?action=retry&status=failed")
    assert "This will retry 1 appeal:" in text_of(confirm)
    assert "Copies the relay accepted already are not sent again." in confirm
    population.post("/manage/appeals/bulk", data=confirm_form(confirm, "/manage/appeals/bulk"))
    work()
    assert status_of(app, "failed@example.org") == Status.SENT


def test_bulk_action_says_what_it_does_not_apply_to(app, population):
    # Eight appeals from GB or anywhere: only the two queued ones can be cancelled.
    confirm = text_of(page(population, "/manage/appeals/bulk?action=cancel&email=example"))
    assert "This will cancel 2 appeals:" in confirm
    assert "(8 in all; the others are in states this does not apply to)" in confirm
    assert "This cannot be undone." in confirm
    nothing = page(population, "/manage/appeals/bulk?action=release&country=FR")
    assert "Nothing to release: no appeal is held among supporter country FR." in text_of(nothing)
    assert 'action="/manage/appeals/bulk"' not in nothing  # no button that would do nothing
    assert page(population, "/manage/appeals/bulk?action=delete", 400)
    assert page(population, "/manage/appeals/bulk?action=hold&country=GBR", 400)


def test_a_bulk_action_with_hostile_filters_changes_nothing(app, population):
    token = csrf_token(page(population, "/manage/appeals"))
    for data in (
        {"action": "cancel", "country": "<script>", "csrf_token": token},
        {"action": "cancel", "email": "ana@example.org\r\nBcc: x", "csrf_token": token},
        {"action": "explode", "csrf_token": token},
    ):
        reply = population.post("/manage/appeals/bulk", data=data)
        assert reply.status_code == 302
        assert "That did not work" in page(population, reply.headers["Location"])
    # 100 KB is more than a form may carry: the app's own page says so.
    reply = population.post(
        "/manage/appeals/bulk",
        data={"action": "cancel", "email": "x" * 100_000, "csrf_token": token},
    )
    assert reply.status_code == 413 and "more text than we can take" in reply.get_data(True)
    reply = population.post("/manage/appeals/bulk", data={"action": "cancel"})
    assert reply.status_code == 400  # no CSRF token
    assert status_of(app, "queued@example.org") == Status.QUEUED
    with app.app_context():
        cancels = db.select(db.func.count()).select_from(AuditEvent).filter_by(action="cancel")
        assert db.session.scalar(cancels) == 0


def test_cancel_asks_first(app, population):
    number = appeal_id(app, "queued@example.org")
    html = page(population, "/manage/appeals?status=queued")
    link = re.search(
        rf'href="(/manage/steer/confirm\?action=cancel&amp;appeal_id={number}[^"]*)"', html
    )
    assert link, "no cancel link"
    confirm = page(population, htmlmod.unescape(link.group(1)))
    assert "This will cancel 1 appeal" in text_of(confirm) and "cannot be undone" in confirm
    assert status_of(app, "queued@example.org") == Status.QUEUED
    fields = confirm_form(confirm, "/manage/steer")
    assert fields["next"] == "/manage/appeals?status=queued"
    reply = population.post("/manage/steer", data=fields)
    assert reply.headers["Location"] == "/manage/appeals?status=queued"
    assert status_of(app, "queued@example.org") == Status.CANCELLED


def test_hold_everything_with_nothing_to_hold_says_so_plainly(app, manager):
    html = page(manager, "/manage")
    bulk = re.search(r'<form method="get" action="/manage/steer/confirm" id="bulk"', html)
    assert bulk, "the 'everything' buttons ask first"
    confirm = page(manager, "/manage/steer/confirm?action=hold&appeal_id=all")
    assert "Nothing to hold: no appeal is queued or waiting to retry." in text_of(confirm)
    assert 'action="/manage/steer"' not in confirm
    token = csrf_token(confirm)
    reply = manager.post(
        "/manage/steer", data={"csrf_token": token, "action": "hold", "appeal_id": "all"}
    )
    assert "Nothing to hold: no appeal is queued or waiting to retry." in page(
        manager, reply.headers["Location"]
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/manage",
        "/admin",
        "/manage\\@evil",
        "/manage\r\nSet-Cookie: evil=1",
        "/manage/" + "x" * 100_000,
    ],
)
def test_next_never_leaves_the_console(app, manager, target):
    token = csrf_token(page(manager, "/manage"))
    reply = manager.post(
        "/manage/steer",
        data={"csrf_token": token, "action": "hold", "appeal_id": "all", "next": target},
    )
    if len(target) > 50_000:  # more than a form may carry: refused whole, nothing done
        assert reply.status_code == 413
    else:
        assert reply.headers["Location"] == "/manage"
    confirm = page(
        manager,
        "/manage/steer/confirm?"
        + urlencode({"action": "hold", "appeal_id": "all", "next": target}),
    )
    assert 'href="/manage"' in confirm and "evil" not in confirm and "xxxxx" not in confirm


# --- the export ------------------------------------------------------------------------------


def exported(client: Any, **query: str) -> list[list[str]]:
    reply = client.get("/manage/export.csv?" + urlencode(query))
    assert reply.status_code == 200 and reply.mimetype == "text/csv"
    assert reply.is_streamed
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="appeals-')
    return list(csv.reader(io.StringIO(reply.get_data(as_text=True))))


def test_export_has_no_personal_data_unless_asked_and_is_audited(app, population):
    rows = exported(population)
    assert rows[0] == list(search.EXPORT_COLUMNS)
    assert len(rows) == 9
    flat = " ".join(" ".join(r) for r in rows)
    assert "@" not in flat and "Ana" not in flat
    assert "Por favor" not in flat  # never a letter, nor the supporter's sentence

    rows = exported(population, country="DE", personal="1")
    assert rows[0] == list(search.EXPORT_COLUMNS + search.PERSONAL_COLUMNS)
    assert sorted(r[rows[0].index("email")] for r in rows[1:]) == [
        "dieter@example.de",
        "eva@example.de",
    ]
    assert "Por favor" not in " ".join(" ".join(r) for r in rows)
    with app.app_context():
        log = db.session.scalars(
            db.select(AuditEvent.detail).filter_by(action="export").order_by(AuditEvent.id)
        ).all()
    assert log == [
        "8 appeals (all appeals); no personal data",
        "2 appeals (supporter country DE); with names and e-mail addresses",
    ]


def test_export_neutralises_formulas(app, manager):
    names = ['=HYPERLINK("http://x.example","hi")', "+41 Zürich", "-2+3", "Ana = fine"]
    for n, name in enumerate(names):
        submit(manager, name=name, email=f"f{n}@example.org")
    rows = exported(manager, personal="1")
    column = rows[0].index("name")
    got = sorted(r[column] for r in rows[1:])
    assert got == sorted(
        ['\'=HYPERLINK("http://x.example","hi")', "'+41 Zürich", "'-2+3", "Ana = fine"]
    )


# --- pages whose cost does not grow with the number of appeals ---------------------------------


def console_pages(app: Any) -> list[str]:
    with app.app_context():
        first = db.session.scalar(db.select(db.func.min(Appeal.id)))
    return [
        "/manage",
        "/manage/live.json",
        "/manage/appeals",
        "/manage/appeals?status=sent&country=GB",
        "/manage/appeals?domain=maec.example.org&email=example",
        f"/manage/appeals/{first}",
        "/manage/appeals/bulk?action=hold&country=GB",
        "/manage/steer/confirm?action=retry&appeal_id=all",
        "/manage/export.csv?personal=1",
        "/manage/mail",
    ]


def grow(app: Any, smtp: Any, work: Any, n: int) -> None:
    """``n`` more appeals: half sent, a quarter failed, a quarter queued of which half held."""
    from campaign import appeals

    with app.app_context():
        create_synthetic(SLUG, n // 2)
    work()
    smtp.handler.rcpt_replies = {"ministro@mju.es": "550 5.1.1 mailbox unavailable"}
    with app.app_context():
        create_synthetic(SLUG, n // 4)
    work()
    smtp.handler.rcpt_replies = {}
    with app.app_context():
        create_synthetic(SLUG, n - n // 2 - n // 4)
        queued = db.session.scalars(db.select(Appeal.id).filter_by(status=Status.QUEUED)).all()
        appeals.steer("hold", by="test", appeal_ids=list(queued)[: len(queued) // 2])


def queries_per_page(app: Any, client: Any, urls: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with app.app_context():
        engine = db.engine
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    for url in urls:
        # Twice, and the fewer: what admins rarely change is kept for two seconds
        # (campaign.snapshots), so a first request may read it and a second not.
        runs = []
        for _ in range(2):
            seen.clear()
            event.listen(engine, "before_cursor_execute", count)
            try:
                reply = client.get(url)
                reply.get_data()  # a streamed answer runs its queries now
                assert reply.status_code == 200, url
            finally:
                event.remove(engine, "before_cursor_execute", count)
            runs.append(len(seen))
        counts[url] = min(runs)
    return counts


def test_queries_per_page_do_not_grow_with_the_appeals(app, manager, smtp, work):
    add_embassy(app)
    grow(app, smtp, work, 10)
    urls = console_pages(app)
    few = queries_per_page(app, manager, urls)
    grow(app, smtp, work, 200)
    many = queries_per_page(app, manager, urls)
    assert many == few
    assert max(few.values()) <= 15, few


PAGE_BUDGET = 0.3
"""Seconds a console page may take with 100,000 appeals in the database."""


def a_big_campaign(app: Any, n: int = 100_000) -> None:
    """``n`` appeals as the database holds them after a busy week: 60% sent over the
    last day (each with its copy to the Minister), 5% failed, 5% held, the rest queued.
    Written in bulk as rows in those states (their moves would take minutes here, and
    the console reads states, not moves), then vacuumed and analysed on PostgreSQL as
    its autovacuum would."""
    import uuid

    from sqlalchemy import insert, text

    from campaign.models import Recipient

    languages = ("es", "en", "fr", "de", "it", "pt", "ca", "nl")
    countries = ("GB", "DE", "FR", "ES", "US", "MX", "AR", "IT", "NL", "SE")
    now = utcnow()

    def row(i: int) -> dict[str, Any]:
        status, sent_at, reason = Status.QUEUED, None, None
        if i < n * 60 // 100:
            status, sent_at = Status.SENT, now - timedelta(hours=i % 24, minutes=i % 60)
        elif i < n * 65 // 100:
            status, reason = Status.FAILED, "ministro@mju.es: 550 5.1.1 unavailable"
        elif i < n * 70 // 100:
            status, reason = Status.HELD, "hold by test"
        return {
            "id": i + 1,
            "public_id": str(uuid.uuid4()),
            "campaign": SLUG,
            "name": f"Supporter {i}",
            "email": f"supporter{i}@example.org",
            "language": languages[i % len(languages)],
            "country": countries[i % len(countries)],
            "status": status,
            "status_reason": reason,
            "attempts": 1 if status != Status.QUEUED else 0,
            "created_at": now - timedelta(days=1),
            "confirmed_at": now - timedelta(days=1),
            "sent_at": sent_at,
            "updated_at": now,
        }

    with app.app_context():
        for start in range(0, n, 10_000):
            rows = [row(i) for i in range(start, min(n, start + 10_000))]
            db.session.execute(insert(Appeal), rows)
            copies = [
                {
                    "appeal_id": r["id"],
                    "address": "ministro@mju.es",
                    "name": "Ministro",
                    "role": "to",
                    "status": "accepted",
                    "attempts": 1,
                    "last_reply": "250 OK",
                    "accepted_at": r["sent_at"],
                }
                for r in rows
                if r["sent_at"] is not None
            ]
            if copies:
                db.session.execute(insert(Recipient), copies)
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            db.session.execute(text("SELECT setval('appeals_id_seq', :n)"), {"n": n})
            db.session.commit()
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.execute(text("VACUUM ANALYZE appeals, appeal_recipients"))


def test_every_console_page_answers_within_300_ms_with_100000_appeals(app, manager, redis):
    """Each page at its best of three (the machine is shared with other tests)."""
    add_embassy(app)
    start = time.monotonic()
    a_big_campaign(app)
    built = time.monotonic() - start
    pages = [
        "/manage",
        "/manage/live.json",
        "/manage/appeals",
        "/manage/appeals?status=sent&country=GB",
        "/manage/appeals?email=supporter99999%40example.org",
        "/manage/appeals?email=nobody",
        "/manage/appeals?domain=maec.example.org",
        "/manage/appeals?" + urlencode({"before": 50_000, "language": "de"}),
        "/manage/appeals/60001",
        "/manage/appeals/bulk?action=release&status=held&country=GB",
        "/manage/steer/confirm?action=retry&appeal_id=all",
    ]
    timings = {}
    for url in pages:
        best = float("inf")
        for _ in range(3):
            start = time.monotonic()
            reply = manager.get(url)
            reply.get_data()
            best = min(best, time.monotonic() - start)
            assert reply.status_code == 200, url
        timings[url] = round(best * 1000)
    print(f"built in {built:.1f} s; best of 3, in ms: {timings}")
    slow = {url: t for url, t in timings.items() if t >= PAGE_BUDGET * 1000}
    assert not slow, f"slower than {PAGE_BUDGET} s with 100,000 appeals: {slow}"
    assert "More than 1,000" in page(manager, "/manage/appeals")
    # The export streams every one of them, a chunk at a time: the first chunks come
    # before the rest are read (memory traced meanwhile: an export built whole would
    # hold its 100,000 rows, and 15 MB of CSV, by then).
    import tracemalloc

    start = time.monotonic()
    tracemalloc.start()
    try:
        reply = manager.get("/manage/export.csv?personal=1")
        assert reply.is_streamed
        chunks = iter(reply.response)
        first = [next(chunks) for _ in range(5)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = lines = 0
    for chunk in [*first, *chunks]:
        size += len(chunk)
        lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
    reply.close()
    print(f"export: {size / 1e6:.1f} MB in {time.monotonic() - start:.1f} s; {peak / 1e6:.1f} MB")
    assert lines == 100_001
    assert peak < size / 2, f"the export held {peak / 1e6:.1f} MB before its first lines"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "now"),
        (4, "now"),
        (30, "in 30 s"),
        (-42, "42 s ago"),
        (60 * 29 + 59, "in 29 min"),
        (-3600 * 3 - 60 * 20, "3 h 20 min ago"),
        (3600 * 5, "in 5 h"),
        (86_400 * 3 + 3600 * 11, "in 3 d 11 h"),
        (86_400 * 4834, "in 4834 d"),
    ],
)
def test_times_people_read(seconds, expected):
    from campaign.console import readable, relative

    now = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert relative(now + timedelta(seconds=seconds), now) == expected
    assert readable(now, now) == "2026-12-01 09:30 UTC (now)"
