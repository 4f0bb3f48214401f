"""Issue 9, the admin side: pauses of sending (everything, one campaign), test mode, the
relay connection check, diplomats (edit, confirm before delete, CSV import, countries
without one), pacing as people type it, rq-dashboard behind the admin role, and the
page a manager gets on an admin page. Real parts throughout: Redis, aiosmtpd servers on
loopback (one speaking TLS with a certificate made here), SQLite and PostgreSQL, real
dispatcher and worker processes, Chromium."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from faults import (
    lost_and_duplicated,
    start_dispatcher,
    start_worker,
    stop,
    wait_until,
    worker_env,
)

from campaign import mime, settings
from campaign.db import db
from campaign.mail import Outgoing, staff_copy
from campaign.models import (
    Appeal,
    AuditEvent,
    CampaignOption,
    Diplomat,
    Recipient,
    Role,
    Setting,
    Status,
)
from campaign.users import create_user
from conftest import SinkHandler, free_port, run_jobs
from helpers import APPEALS_URL, CHROMIUM, CHROMIUM_ARGS, csrf_token, log_in, self_signed, submit
from helpers import supporter as supporter_data

ADMIN = "admin@example.org"
MANAGER = "manager@example.org"
PASSWORD = "correct horse battery staple"
SLUG = "pavlov-extradition"
CAMPAIGN_PAGE = f"/admin/campaigns/{SLUG}"


# --- helpers -----------------------------------------------------------------------------


def staff(app: Any, client: Any, email: str, role: str) -> Any:
    with app.app_context():
        create_user(email, role, PASSWORD)
    assert log_in(client, email, PASSWORD).status_code == 302
    return client


@pytest.fixture
def admin(app, client):
    return staff(app, client, ADMIN, Role.ADMIN)


@pytest.fixture
def no_confirmation(app):
    with app.app_context():
        db.session.add(CampaignOption(slug=SLUG, confirmation_required=False))
        db.session.commit()


def statuses(app: Any) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Appeal.status, db.func.count()).group_by(Appeal.status)
        ).all()
        db.session.remove()
    return {status: int(n) for status, n in rows}


def audit_actions(app: Any) -> list[tuple[str, str | None]]:
    with app.app_context():
        return [
            (e.action, e.detail)
            for e in db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id))
        ]


def switch_sending(client: Any, action: str, campaign: str = "") -> Any:
    page = client.get("/admin/campaigns").get_data(as_text=True)
    return client.post(
        "/admin/sending",
        data={"csrf_token": csrf_token(page), "action": action, "campaign": campaign},
    )


def flashes(html: str) -> list[str]:
    return [
        re.sub(r"<[^>]+>", "", m).strip()
        for m in re.findall(r'<p class="flash [a-z]+" role="status">(.*?)</p>', html, re.S)
    ]


# --- a manager on an admin page ----------------------------------------------------------

ADMIN_PAGES = [
    "/admin",
    "/admin/campaigns",
    CAMPAIGN_PAGE,
    "/admin/diplomats",
    "/admin/users",
    "/admin/audit",
    "/admin/rq/",
    "/admin/rq/0/data/queues.json",
]


def test_a_manager_on_an_admin_page_is_told_it_is_for_admins(app, client):
    staff(app, client, MANAGER, Role.MANAGER)
    for page in ADMIN_PAGES:
        reply = client.get(page)
        assert reply.status_code == 403, page
        html = reply.get_data(as_text=True)
        assert "This page is for admins" in html, page
        assert MANAGER in html and "manager" in html, page
        assert 'href="/manage"' in html, page  # a way back to their own work
        assert "Forbidden" not in html, page  # not Werkzeug's page
    token = csrf_token(client.get("/manage").get_data(as_text=True))
    reply = client.post(
        f"/admin/campaigns/{SLUG}/test-mode", data={"csrf_token": token, "test_on": "y"}
    )
    assert reply.status_code == 403
    assert "This page is for admins" in reply.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(CampaignOption, SLUG) is None


def test_staff_pages_say_whether_each_campaign_is_live(app, admin):
    html = admin.get("/manage").get_data(as_text=True)
    banner = re.search(r'<div id="sending-banner".*?</div>', html, re.S).group(0)
    assert re.search(rf'data-campaign="{SLUG}">\s*{SLUG}:\s*live', banner)
    assert 'href="/admin/campaigns"' in html  # the admins' menu entry
    with app.app_context():
        from campaign import sending

        sending.set_test_mode(SLUG, ADMIN, by=ADMIN)
    banner = re.search(
        r'<div id="sending-banner".*?</div>', admin.get("/manage").get_data(as_text=True), re.S
    ).group(0)
    assert re.search(rf"{SLUG}:\s*<strong>test mode</strong>", banner)
    # Not on the supporters' pages for someone who is not signed in.
    assert "sending-banner" not in admin.application.test_client().get(f"/c/{SLUG}").get_data(
        as_text=True
    )


# --- pauses ------------------------------------------------------------------------------


def test_a_global_pause_holds_everything_and_resuming_sends_it_all(
    app, admin, client, smtp, redis, no_confirmation
):
    assert switch_sending(admin, "pause").status_code == 302
    assert "Sending is paused for every campaign" in admin.get("/admin/campaigns").get_data(
        as_text=True
    )
    for i in range(3):
        assert (
            client.post(APPEALS_URL, json=supporter_data(email=f"p{i}@example.org")).status_code
            == 202
        )
    run_jobs(app, redis)  # a dispatcher pass and every job: nothing goes
    assert smtp.received == []
    assert statuses(app) == {Status.QUEUED: 3}
    assert switch_sending(admin, "pause").status_code == 302
    assert "Nothing changed" in " ".join(
        flashes(admin.get("/admin/campaigns").get_data(as_text=True))
    )

    assert switch_sending(admin, "resume").status_code == 302
    run_jobs(app, redis)
    assert sorted(m.rcpt_tos[0] for m in smtp.received) == ["ministro@mju.es"] * 3
    assert statuses(app) == {Status.SENT: 3}
    assert audit_actions(app)[-2:] == [
        ("sending paused", "every campaign"),
        ("sending resumed", "every campaign"),
    ]
    with app.app_context():
        assert db.session.get(Setting, "sending_paused") is None
        assert max(db.session.scalars(db.select(Appeal.attempts))) == 1  # a pause is no try


def test_a_job_enqueued_before_the_pause_claims_nothing(
    app, admin, client, smtp, redis, no_confirmation
):
    from campaign.delivery.dispatcher import sweep

    client.post(APPEALS_URL, json=supporter_data())
    with app.app_context():
        assert sweep().enqueued == 1  # a job waits in Redis for a worker
        db.session.remove()
    switch_sending(admin, "pause", campaign=SLUG)
    run_jobs(app, redis, dispatch=False)  # the worker runs the job that waited
    assert smtp.received == []
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        assert (appeal.status, appeal.attempts, appeal.job_id) == (Status.QUEUED, 0, None)
    switch_sending(admin, "resume", campaign=SLUG)
    run_jobs(app, redis)
    assert len(smtp.received) == 1
    assert audit_actions(app)[-2:] == [("sending paused", SLUG), ("sending resumed", SLUG)]


def test_a_campaign_pause_is_not_an_intake_pause(app, admin, client, smtp, redis, no_confirmation):
    """Supporters may still write while sending waits; the campaign page says so."""
    switch_sending(admin, "pause", campaign=SLUG)
    assert client.post(APPEALS_URL, json=supporter_data()).status_code == 202
    run_jobs(app, redis)
    assert smtp.received == []
    html = admin.get(CAMPAIGN_PAGE).get_data(as_text=True)
    assert "Sending is paused: confirmed appeals wait in the queue." in html
    row = re.search(
        rf'<tr data-campaign="{SLUG}">.*?</tr>',
        admin.get("/admin/campaigns").get_data(as_text=True),
        re.S,
    ).group(0)
    assert "open" in row and "sending paused" in row


def test_managers_may_pause_and_resume_but_not_elsewhere(app, client, smtp, redis, no_confirmation):
    staff(app, client, MANAGER, Role.MANAGER)
    token = csrf_token(client.get("/manage").get_data(as_text=True))
    reply = client.post(
        "/admin/sending",
        data={"csrf_token": token, "action": "pause", "campaign": "", "back": "/manage"},
    )
    assert reply.status_code == 302 and reply.headers["Location"] == "/manage"
    with app.app_context():
        assert db.session.get(Setting, "sending_paused") is not None
    # Only our own pages to go back to.
    for back in ("https://evil.example/", "//evil.example", "/manage/../../x", "/c/x"):
        reply = client.post(
            "/admin/sending",
            data={"csrf_token": token, "action": "resume", "campaign": "", "back": back},
        )
        assert reply.headers["Location"] == "/manage", back
    for bad in ({"action": "explode"}, {"action": "pause", "campaign": "no-such-campaign"}):
        data = {"csrf_token": token, "campaign": "", **bad}
        assert client.post("/admin/sending", data=data).status_code in (400, 404)
    assert client.post("/admin/sending", data={"action": "pause"}).status_code == 400  # no CSRF


@pytest.fixture
def engine(app, backend, database_urls, redis_url, smtp, tmp_path):
    """A dispatcher and a worker process, as ``make run`` starts them."""
    env = worker_env(database_urls[backend], redis_url, smtp.port, tmp_path / "instance")
    processes = [start_dispatcher(env), start_worker(env)]
    yield
    stop(*processes)


def test_a_pause_stops_a_running_engine_within_seconds_and_loses_nothing(
    app, admin, client, smtp, no_confirmation, engine
):
    """Real dispatcher and worker processes, and a relay that takes a quarter of a second
    per message: the pause comes in the middle of a batch."""
    smtp.handler.delay = 0.25
    expected = {f"s{i}@example.org" for i in range(30)}
    for email in sorted(expected):
        assert client.post(APPEALS_URL, json=supporter_data(email=email)).status_code == 202
    wait_until(lambda: len(smtp.received) >= 3, timeout=60)

    assert switch_sending(admin, "pause").status_code == 302
    paused_at = time.monotonic()
    # Within seconds nothing is being sent: the batch gave back what it had not sent.
    wait_until(lambda: Status.SENDING not in statuses(app), timeout=10)
    settled = len(smtp.received)
    took = time.monotonic() - paused_at
    assert took < 6, took
    # Confirmed appeals, new ones too, wait while it is paused.
    for i in range(30, 33):
        email = f"s{i}@example.org"
        expected.add(email)
        assert client.post(APPEALS_URL, json=supporter_data(email=email)).status_code == 202
    time.sleep(3)
    assert len(smtp.received) == settled < 30
    waiting = statuses(app)
    assert set(waiting) <= {Status.SENT, Status.QUEUED} and waiting[Status.QUEUED] >= 3

    assert switch_sending(admin, "resume").status_code == 302
    wait_until(lambda: statuses(app) == {Status.SENT: 33}, timeout=60)
    assert lost_and_duplicated(expected, smtp.received) == (0, 0)
    with app.app_context():
        # Handed back is not a try: every appeal went on its first.
        assert set(db.session.scalars(db.select(Appeal.attempts))) == {1}


# --- test mode ---------------------------------------------------------------------------


def test_test_mode_sends_only_to_the_staff_address(app, admin, client, smtp, work, no_confirmation):
    with app.app_context():
        create_user(MANAGER, Role.MANAGER, PASSWORD)
        db.session.add(
            Diplomat(target_state="ES", country="GB", name="Embassy", email="emb@maec.example.org")
        )
        db.session.commit()
    page = admin.get(CAMPAIGN_PAGE).get_data(as_text=True)
    # The staff addresses, and no other, are offered; the admin's own is chosen.
    options = re.findall(
        r'<option value="([^"]+)"( selected)?>',
        page.split('id="test_address"')[1].split("</select>")[0],
    )
    assert options == [(ADMIN, " selected"), (MANAGER, "")]
    reply = submit(
        admin, CAMPAIGN_PAGE, f"/admin/campaigns/{SLUG}/test-mode", "test_on", test_address=MANAGER
    )
    assert reply.status_code == 302
    assert f"every appeal now goes to {MANAGER} only" in admin.get(CAMPAIGN_PAGE).get_data(
        as_text=True
    )

    client.post(APPEALS_URL, json=supporter_data(email="gb@example.org", country="GB"))
    work()
    [mail] = smtp.received
    assert mail.rcpt_tos == [MANAGER]  # the envelope: nobody else
    msg = mail.message
    assert [a.addr_spec for a in msg["To"].addresses] == [MANAGER]
    assert "Cc" not in msg and "Bcc" not in msg
    assert msg["Subject"].startswith("[TEST] ")
    assert (
        "ministro@mju.es" in msg["X-Appeal-Test"] and "emb@maec.example.org" in msg["X-Appeal-Test"]
    )
    assert "Embassy" in msg.get_body(("plain",)).get_content()  # the letter as it is
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        assert appeal.status == Status.SENT
        assert appeal.status_reason == f"[TEST] sent to {MANAGER} instead of its addressees"
        copies = {r.address: r for r in db.session.scalars(db.select(Recipient))}
        assert set(copies) == {"ministro@mju.es", "emb@maec.example.org"}
        for copy in copies.values():
            assert copy.status == "accepted"
            assert copy.last_reply.startswith(f"250 [TEST] sent to {MANAGER} instead: ")

    # An address that is not a staff account's is refused: test mode mails nobody else.
    submit(
        admin,
        CAMPAIGN_PAGE,
        f"/admin/campaigns/{SLUG}/test-mode",
        "test_on",
        test_address="victim@example.org",
    )
    assert "Choose the address of an active staff account." in admin.get(CAMPAIGN_PAGE).get_data(
        as_text=True
    )
    with app.app_context():
        assert db.session.get(CampaignOption, SLUG).test_address == MANAGER

    # Live again: the next appeal goes to its addressees.
    assert (
        submit(admin, CAMPAIGN_PAGE, f"/admin/campaigns/{SLUG}/test-mode", "test_off").status_code
        == 302
    )
    client.post(APPEALS_URL, json=supporter_data(email="two@example.org", country="FR"))
    work()
    assert smtp.received[-1].rcpt_tos == ["ministro@mju.es"]
    assert not smtp.received[-1].message["Subject"].startswith("[TEST]")
    assert [a for a in audit_actions(app) if a[0] == "test mode"] == [
        ("test mode", f"{SLUG}: on, to {MANAGER}"),
        ("test mode", f"{SLUG}: off (live)"),
    ]


def test_a_staff_copy_replaces_folded_headers_and_keeps_the_letter(app):
    with app.app_context():  # the copy is signed again when a DKIM key is configured
        _staff_copy_keeps_the_letter()


def _staff_copy_keeps_the_letter():
    cc = [(f"Embajada de España en país número {i}", f"emb{i}@maec.example.org") for i in range(4)]
    data = mime.build(
        sender=("Zoë via Amnesty", "appeals@amnesty.test"),
        reply_to=("Zoë", "zoe@example.org"),
        to=[("Sr. D. Alberto Ruiz-Gallardón, Ministro de Justicia", "ministro@mju.es")],
        cc=cc,
        subject="Pido que no se extradite a Aleksandr Pavlov a Kazajistán, señor ministro",
        text="Señor ministro:\r\n\r\nTo: not a header\r\n",
        html=None,
        message_id="<x@amnesty.test>",
    )
    real = Outgoing("appeals@amnesty.test", ["ministro@mju.es"], data, "<x@amnesty.test>")
    copy = staff_copy(real, "staff@example.org", ["ministro@mju.es", *(a for _, a in cc)])
    assert copy.recipients == ["staff@example.org"]
    from email import message_from_bytes, policy

    msg = message_from_bytes(copy.data, policy=policy.default)
    assert [a.addr_spec for a in msg["To"].addresses] == ["staff@example.org"]
    assert msg["Cc"] is None
    assert msg["Subject"].startswith("[TEST] Pido que no se extradite")
    assert msg["Reply-To"].addresses[0].addr_spec == "zoe@example.org"
    assert "emb3@maec.example.org" in msg["X-Appeal-Test"]
    assert msg.get_content().replace("\r\n", "\n") == "Señor ministro:\n\nTo: not a header\n"
    assert all(len(line) <= 998 for line in copy.data.split(b"\r\n"))


# --- the relay connection check ----------------------------------------------------------


@pytest.fixture
def tls_relay(tmp_path) -> Iterator[dict[str, Any]]:
    """A relay on loopback that requires STARTTLS with a certificate made here, and then
    offers AUTH; it records every log-in."""
    context, cert_file = self_signed(tmp_path)
    handler = SinkHandler()
    logins: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
        assert isinstance(data, LoginPassword)
        logins.append((data.login.decode(), data.password.decode()))
        # handled=False: aiosmtpd answers a refusal itself (535).
        return AuthResult(success=data.password == b"the relay's own secret", handled=False)

    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield {"port": port, "cert": str(cert_file), "handler": handler, "logins": logins}
    finally:
        controller.stop()


def _check(
    app: Any, admin: Any, relay: dict[str, Any], password: str
) -> tuple[str, dict[str, tuple[str, str]]]:
    app.config["RELAY_CHECK_PORTS"] = (25, 465, 587, relay["port"])
    with app.app_context():
        settings.save(
            {
                "relay_port": relay["port"],
                "relay_security": "starttls",
                "relay_username": "appeals",
                "relay_password": password,
            },
            by="test",
        )
    reply = submit(admin, "/admin", "/admin/check-connection", "")
    assert reply.status_code == 302
    html = admin.get("/admin").get_data(as_text=True)
    section = re.search(r'<section id="relay-check".*?</section>', html, re.S)
    assert section, html
    steps = {}
    for name, result, detail in re.findall(
        r"<tr class=\"check-\w+\"><td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td></tr>",
        section.group(0),
        re.S,
    ):
        steps[name] = (re.sub(r"<[^>]+>", "", result).strip(), detail)
    # Shown once: the next visit has no report.
    assert 'id="relay-check"' not in admin.get("/admin").get_data(as_text=True)
    return html, steps


def test_the_relay_check_shows_each_step_and_sends_nothing(app, admin, tls_relay):
    app.config["MAIL_CA_FILE"] = tls_relay["cert"]
    html, steps = _check(app, admin, tls_relay, "the relay's own secret")
    assert [name for name in steps] == [
        "connect",
        "EHLO",
        "STARTTLS",
        "certificate",
        "EHLO after STARTTLS",
        "AUTH",
    ]
    assert all(result == "passed" for result, _ in steps.values()), steps
    assert "STARTTLS" in steps["EHLO"][1] and "AUTH" not in steps["EHLO"][1]
    assert "AUTH" in steps["EHLO after STARTTLS"][1]  # offered only once encrypted
    assert steps["STARTTLS"][1].startswith("220 ") and "TLSv1." in steps["STARTTLS"][1]
    certificate = steps["certificate"][1]
    assert "subject CN=127.0.0.1" in certificate and "issuer CN=127.0.0.1" in certificate
    assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 0 days\)", certificate)
    assert steps["AUTH"][1].startswith("235 ")
    assert f"accepted a connection from {ADMIN}" in " ".join(flashes(html))
    assert tls_relay["logins"] == [("appeals", "the relay's own secret")]
    assert tls_relay["handler"].received == []  # nothing was sent


def test_the_relay_check_names_an_untrusted_certificate_and_logs_in_nowhere(app, admin, tls_relay):
    html, steps = _check(app, admin, tls_relay, "the relay's own secret")  # no MAIL_CA_FILE
    assert steps["STARTTLS"][0] == "failed"
    assert re.search(r"certificate not trusted: self.signed certificate", steps["STARTTLS"][1])
    assert steps["certificate"][0] == "failed"
    assert "subject CN=127.0.0.1" in steps["certificate"][1]  # what it showed, all the same
    assert "AUTH" not in steps
    assert tls_relay["logins"] == []  # the password never went to an untrusted server
    assert "The relay could not be reached" in " ".join(flashes(html))


def test_the_relay_check_shows_a_refused_log_in(app, admin, tls_relay):
    app.config["MAIL_CA_FILE"] = tls_relay["cert"]
    _, steps = _check(app, admin, tls_relay, "a wrong password")
    assert steps["AUTH"][0] == "failed"
    assert steps["AUTH"][1].startswith("535 ")
    assert steps["certificate"][0] == "passed"


def test_a_relay_that_cannot_be_reached_is_described_in_the_same_words(app, admin):
    """A closed port: the check says what it says of any unreachable relay."""
    closed = {"port": free_port()}
    _, steps = _check(app, admin, closed, "x")
    assert steps == {"connect": ("failed", "could not be reached, or refused the connection")}


# --- diplomats ---------------------------------------------------------------------------


def diplomats_on_file(app: Any) -> list[tuple[str, str, str | None, str | None]]:
    with app.app_context():
        return [
            (d.country, d.name, d.email, d.fax)
            for d in db.session.scalars(
                db.select(Diplomat).order_by(Diplomat.country, Diplomat.name)
            )
        ]


def test_no_country_is_chosen_for_the_admin(app, admin):
    html = admin.get("/admin/diplomats").get_data(as_text=True)
    tag = re.search(r'<select[^>]*name="country"[^>]*>', html).group(0)
    assert " required" in tag
    options = re.findall(r"<option[^>]*>", html.split(tag)[1].split("</select>")[0])
    assert options[0] == '<option value="">' and not any("selected" in o for o in options)
    reply = submit(admin, "/admin/diplomats", "", "add", name="Embassy of Spain")
    assert reply.status_code == 422
    assert "Choose the country they are accredited to." in reply.get_data(as_text=True)
    assert diplomats_on_file(app) == []
    # From the list of countries without one, the country comes chosen.
    html = admin.get("/admin/diplomats?country=fr").get_data(as_text=True)
    assert re.search(r'<option selected value="FR">|<option value="FR" selected>', html)


def test_edit_a_diplomat(app, admin):
    submit(
        admin,
        "/admin/diplomats",
        "",
        "add",
        country="GB",
        name="Embassy",
        email="a@maec.example.org",
    )
    submit(admin, "/admin/diplomats", "", "add", country="GB", name="Consulate")
    page = admin.get("/admin/diplomats").get_data(as_text=True)
    [edit] = re.findall(r'href="(/admin/diplomats/\d+)">Embassy<', page)
    fields = {
        k: v
        for k, v in re.findall(
            r'name="(country|name|email)"[^>]*value="([^"]*)"',
            admin.get(edit).get_data(as_text=True),
        )
    }
    assert fields == {"name": "Embassy", "email": "a@maec.example.org"}
    reply = submit(
        admin,
        edit,
        "",
        "save",
        country="IE",
        name="Embassy of Spain in Dublin",
        fax="+353 1 269 1640",
    )
    assert reply.status_code == 302
    assert diplomats_on_file(app) == [
        ("GB", "Consulate", None, None),
        ("IE", "Embassy of Spain in Dublin", "a@maec.example.org", "+353 1 269 1640"),
    ]
    # Renamed onto another entry: a clear refusal, not a crash.
    [consulate] = re.findall(
        r'href="(/admin/diplomats/\d+)">Consulate<',
        admin.get("/admin/diplomats").get_data(as_text=True),
    )
    reply = submit(admin, consulate, "", "save", country="IE", name="Embassy of Spain in Dublin")
    assert reply.status_code == 422 and "listed already" in reply.get_data(as_text=True)
    for bad in ({"fax": "call me\r\nmaybe"}, {"name": "Line one\nline two"}, {"email": "x@"}):
        assert submit(admin, consulate, "", "save", **bad).status_code == 422, bad
    assert ("diplomat edited", "Embassy (GB) → Embassy of Spain in Dublin (IE)") in audit_actions(
        app
    )


def test_delete_asks_first(app, admin):
    submit(admin, "/admin/diplomats", "", "add", country="GB", name="Embassy <b>of Spain</b>")
    page = admin.get("/admin/diplomats").get_data(as_text=True)
    [action] = re.findall(r'<form method="get" action="(/admin/diplomats/\d+/delete)"', page)
    confirm = admin.get(action)
    html = confirm.get_data(as_text=True)
    assert confirm.status_code == 200
    assert "Delete a representative?" in html
    assert "Embassy &lt;b&gt;of Spain&lt;/b&gt;" in html and "<b>of Spain" not in html
    assert diplomats_on_file(app) != []  # asking deleted nothing
    reply = admin.post(action, data={"csrf_token": csrf_token(html), "delete": "y"})
    assert reply.status_code == 302
    assert diplomats_on_file(app) == []
    assert audit_actions(app)[-1] == ("diplomat deleted", "Embassy <b>of Spain</b> (GB)")


def test_countries_supporters_write_from_without_a_diplomat(app, admin, client, no_confirmation):
    for email, country in [
        ("a@x.org", "FR"),
        ("b@x.org", "FR"),
        ("c@x.org", "GB"),
        ("d@x.org", "ES"),
    ]:
        client.post(APPEALS_URL, json=supporter_data(email=email, country=country))
    submit(admin, "/admin/diplomats", "", "add", country="GB", name="Embassy")
    html = admin.get("/admin/diplomats").get_data(as_text=True)
    table = re.search(r'<table id="missing-countries"[^>]*>(.*?)</table>', html, re.S).group(1)
    rows = [
        [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", r, re.S)]
        for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    ]
    # Spain's own supporters need no Spanish diplomat; GB has one.
    assert rows == [["ES", "France", "2", "Add one"]]
    assert 'href="/admin/diplomats?country=FR#add"' in table


def _import(admin: Any, content: bytes, name: str = "diplomats.csv") -> Any:
    import io

    page = admin.get("/admin/diplomats").get_data(as_text=True)
    token = re.search(
        r'action="/admin/diplomats/import".*?name="csrf_token"[^>]*value="([^"]+)"', page, re.S
    ).group(1)
    return admin.post(
        "/admin/diplomats/import",
        data={"csrf_token": token, "upload": "y", "file": (io.BytesIO(content), name)},
        content_type="multipart/form-data",
    )


def _report(html: str) -> tuple[list[str], list[str]]:
    def items(list_id: str) -> list[str]:
        found = re.search(rf'<ul id="{list_id}">(.*?)</ul>', html, re.S)
        return (
            [
                re.sub(r"\s+", " ", i).strip()
                for i in re.findall(r"<li>(.*?)</li>", found.group(1), re.S)
            ]
            if found
            else []
        )

    return items("import-accepted"), items("import-refused")


def test_import_diplomats_from_csv_row_by_row(app, admin):
    submit(admin, "/admin/diplomats", "", "add", country="IE", name="Embassy of Spain in Dublin")
    long_name = "E" * 30_000
    rows = [
        "Name,Country,E-mail,Fax,Postal address,Notes",
        "Embassy of Spain in London,gb,Emb.Londres@MAEC.example.org,+44 20 7235 5555,"
        '"39 Chesham Place\nLondon SW1X 8SB",x',
        "Consulado de España en Manchester,GB,,+44 161 236 1262,,",
        "Nowhere embassy,XX,a@example.org,,,",
        "Bad address,FR,not-an-address,,,",
        '"Injected\r\nBcc: victim@example.org",FR,,,,',
        f"{long_name},FR,,,,",
        "Embassy of Spain in Dublin,IE,,,,",
        "Embassy of Spain in London,GB,,,,",
        "Fax embassy,DE,,=cmd|' /C calc'!A0,,",
        ",,,,,",
        '=HYPERLINK("http://evil.example"),DE,,,,',
        "Ambassade d'Espagne à Paris \u202eevil,FR,,,,",
        "Ambasciata di Spagna,IT,amb.roma@maec.example.org,,,,extra",
    ]
    reply = _import(admin, "\r\n".join(rows).encode("utf-8-sig"))
    html = reply.get_data(as_text=True)
    assert reply.status_code == 200
    accepted, refused = _report(html)
    assert accepted == [
        "Line 2: Embassy of Spain in London (United Kingdom)",
        "Line 4: Consulado de España en Manchester (United Kingdom)",
        "Line 14: =HYPERLINK(&#34;http://evil.example&#34;) (Germany)",
    ]
    assert [r.split(":")[0] for r in refused] == [
        "Line 5",
        "Line 6",
        "Line 7",
        "Line 9",
        "Line 10",
        "Line 11",
        "Line 12",
        "Line 15",
        "Line 16",
    ]
    assert "country: Not a country code we know" in refused[0]
    assert refused[1].startswith("Line 6: email:")
    assert "name: Use one line of text" in refused[2]
    assert "name: Use at most 200 characters" in refused[3] and long_name not in html
    assert "already on file" in refused[4]
    assert "repeats line 2" in refused[5]
    assert "fax: Use digits" in refused[6]
    assert "name: Use one line of text" in refused[7]  # a bidi override
    assert "more cells than the first line names" in refused[8]
    assert "Columns not read: notes." in html
    assert "3 rows added." in html and "9 rows refused." in html
    assert diplomats_on_file(app) == [
        ("DE", '=HYPERLINK("http://evil.example")', None, None),
        ("GB", "Consulado de España en Manchester", None, "+44 161 236 1262"),
        ("GB", "Embassy of Spain in London", "emb.londres@maec.example.org", "+44 20 7235 5555"),
        ("IE", "Embassy of Spain in Dublin", None, None),
    ]
    with app.app_context():
        london = db.session.scalar(
            db.select(Diplomat).filter_by(country="GB", name="Embassy of Spain in London")
        )
        assert london.postal_address == "39 Chesham Place\nLondon SW1X 8SB"
    assert audit_actions(app)[-1] == ("diplomats imported", "3 added, 9 refused")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "Name;Country\nEmbajada;GB\n".encode("cp1252") + "Cónsul;GB\n".encode("cp1252"),
            "not UTF-8",
        ),
        (b"just,some,columns\nx,y,z\n", "The first line must name the columns"),
        (b"", "The first line must name the columns"),
        (b"\x00\x00\x00", "The first line must name the columns"),
    ],
)
def test_a_file_that_cannot_be_read_says_why(app, admin, content, message):
    reply = _import(admin, content)
    assert reply.status_code == 422
    assert message in reply.get_data(as_text=True)
    assert diplomats_on_file(app) == []


def test_semicolons_and_a_file_too_big(app, admin):
    reply = _import(admin, "country;name\nGB;Embajada de España\n".encode())
    assert reply.status_code == 200 and diplomats_on_file(app) == [
        ("GB", "Embajada de España", None, None)
    ]
    reply = _import(admin, b"country,name\n" + b"GB,x\n" * 20_000)  # 100 KB
    assert reply.status_code == 413
    assert "more text than we can take" in reply.get_data(as_text=True)


# --- pacing ------------------------------------------------------------------------------


def _pacing(admin: Any, per_domain: str, per_address: str = "60") -> Any:
    page = admin.get("/admin").get_data(as_text=True)
    return admin.post(
        "/admin/pacing",
        data={
            "csrf_token": csrf_token(page),
            "pacing_per_domain_per_hour": per_domain,
            "pacing_per_address_per_hour": per_address,
        },
    )


def test_pacing_takes_what_its_message_allows(app, admin):
    from campaign.delivery.pacing import pacing_rules

    assert _pacing(admin, "0.1", "1000000").status_code == 302
    with app.app_context():
        rules = pacing_rules()
    assert (rules.per_domain_per_hour, rules.per_address_per_hour) == (0.1, 1_000_000.0)
    html = admin.get("/admin").get_data(as_text=True)
    assert 'value="0.1"' in html and 'value="1000000"' in html  # shown as people write them


@pytest.mark.parametrize("typed", ["0,5", "abc", "0.09", "NaN", "-Infinity", "1e400", ""])
def test_pacing_shows_what_was_typed_and_why_it_was_refused(app, admin, typed):
    from campaign.delivery.pacing import pacing_rules

    reply = _pacing(admin, typed)
    assert reply.status_code == 422
    html = reply.get_data(as_text=True)
    assert f'value="{typed}"' in html or (
        typed == "" and 'name="pacing_per_domain_per_hour"' in html
    )
    error = re.search(r'id="pacing_per_domain_per_hour-error">(.*?)</p>', html).group(1)
    assert error == "Enter a number from 0.1 to 1000000, with a dot for decimals (such as 0.5)."
    tag = re.search(r'<input[^>]*name="pacing_per_domain_per_hour"[^>]*>', html).group(0)
    assert 'inputmode="decimal"' in tag and 'type="text"' in tag
    with app.app_context():
        assert pacing_rules().per_domain_per_hour == 120.0


# --- rq-dashboard ------------------------------------------------------------------------


def test_rq_dashboard_is_for_admins_on_the_apps_redis(app, admin, client, redis, no_confirmation):
    from campaign.delivery.dispatcher import sweep

    assert app.test_client().get("/admin/rq/").headers["Location"].startswith("/login")
    client.post(APPEALS_URL, json=supporter_data())
    with app.app_context():
        sweep()  # a job waits in the appeals queue
        db.session.remove()
    page = admin.get("/admin/rq/")
    assert page.status_code == 200
    html = page.get_data()
    csp = page.headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", csp).group(1)
    assert "'unsafe-inline'" not in script_src
    for body in re.findall(rb"<script(?![^>]*src=)[^>]*>(.*?)</script>", html, re.S):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert f"'sha256-{digest}'" in script_src
    queues = admin.get("/admin/rq/0/data/queues.json").get_json()["queues"]
    assert {q["name"]: q["count"] for q in queues}["appeals"] == 1
    jobs = admin.get("/admin/rq/0/data/jobs/appeals/queued/8/asc/1.json").get_json()["jobs"]
    [job] = jobs
    assert "deliver_appeals" in job["description"]  # read as JSON, as our jobs are
    # Its buttons send the CSRF token it reads from its cookie; without it, nothing.
    cookie = admin.get_cookie("_csrf_token", path="/admin/rq")
    assert cookie is not None and cookie.secure is False
    url = "/admin/rq/queue/appeals/compact"
    assert admin.post(url).status_code == 400
    assert admin.post(url, headers={"X-CSRFToken": cookie.value}).status_code == 200


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed")
def test_rq_dashboard_runs_in_a_browser_under_our_csp(app, admin, redis, no_confirmation, client):
    """Its scripts run (the queue table fills in) and the browser reports no violation."""
    import threading

    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from campaign.delivery.dispatcher import sweep

    client.post(APPEALS_URL, json=supporter_data())
    with app.app_context():
        sweep()
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    problems: list[str] = []
    failed: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if route.request.url.startswith(base)
                    else (problems.append(route.request.url), route.abort())
                ),
            )
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
            page.goto(f"{base}/login")
            page.fill("#email", ADMIN)
            page.fill("#password", PASSWORD)
            page.click("button, input[type=submit]")
            page.goto(f"{base}/admin/rq/")
            page.wait_for_selector("text=appeals", timeout=15_000)
            page.wait_for_timeout(500)
            browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
    # The dashboard asks for the app's own favicon, which it does not have: nothing else.
    assert [u for u in failed if not u.endswith("/static/favicon.ico")] == []
    assert [p for p in problems if not p.startswith("Failed to load resource")] == []
