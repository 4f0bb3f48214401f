"""The admin screens (relay, test message, diplomats, campaigns, users) and log-in,
through the real views, forms and CSRF, on real SMTP servers on loopback."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller

from campaign.db import db
from campaign.models import Appeal, CampaignOption, Diplomat, Role, Setting, Status, User
from campaign.settings import decrypt_secret
from campaign.users import create_user
from conftest import SinkHandler, free_port
from helpers import APPEALS_URL, csrf_token, form_fields, submit, supporter

ADMIN = "admin@example.org"
MANAGER = "manager@example.org"
PASSWORD = "correct horse battery staple"

# --- helpers -----------------------------------------------------------------------------


def add_user(app: Any, email: str, role: str, password: str = PASSWORD) -> None:
    with app.app_context():
        create_user(email, role, password)


def login(client: Any, email: str, password: str = PASSWORD, next_url: str | None = None) -> Any:
    url = "/login" if next_url is None else f"/login?next={next_url}"
    token = csrf_token(client.get(url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, "email": email, "password": password})


def logged_in_as(app: Any, client: Any, email: str, role: str) -> Any:
    add_user(app, email, role)
    reply = login(client, email)
    assert reply.status_code == 302, reply.get_data(as_text=True)
    return client


@pytest.fixture
def admin(app: Any, client: Any) -> Any:
    return logged_in_as(app, client, ADMIN, Role.ADMIN)


def relay_submit(client: Any, button: str = "save", **changes: Any) -> Any:
    return submit(client, "/admin", "/admin", button, **changes)


def source_of(html: str, label: str) -> tuple[str, str]:
    """(value in use, where it comes from) for one row of the relay screen's table."""
    table = re.search(r'<table id="sources">(.*?)</table>', html, re.S)
    assert table
    row = re.search(rf"<tr><td>{label}</td><td>(.*?)</td><td>(.*?)</td></tr>", table.group(1), re.S)
    assert row, label
    return row.group(1), row.group(2)


def overrides(app: Any) -> dict[str, Any]:
    with app.app_context():
        return {s.key: s.value for s in db.session.scalars(db.select(Setting))}


def no_confirmation(app: Any) -> None:
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()


@pytest.fixture
def second_smtp() -> Iterator[tuple[int, SinkHandler]]:
    handler = SinkHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


# --- access ------------------------------------------------------------------------------

ADMIN_PAGES = ["/admin", "/admin/diplomats", "/admin/users", "/admin/campaigns/pavlov-extradition"]


def test_admin_pages_need_a_login(client):
    for page in ADMIN_PAGES:
        reply = client.get(page)
        assert reply.status_code == 302, page
        target = urlsplit(reply.headers["Location"])
        assert target.path == "/login"
        assert f"next={page.replace('/', '%2F')}" in target.query


def test_managers_may_not_see_admin_pages(app, client):
    logged_in_as(app, client, MANAGER, Role.MANAGER)
    for page in ADMIN_PAGES:
        assert client.get(page).status_code == 403, page
    assert client.get("/manage").status_code == 200


def test_managers_may_not_post_to_admin_pages(app, client, smtp):
    logged_in_as(app, client, MANAGER, Role.MANAGER)
    token = csrf_token(client.get("/manage").get_data(as_text=True))
    posts = {
        "/admin": {"relay_port": "2525", "save": "y"},
        "/admin/test-message": {"send": "y"},
        "/admin/diplomats": {"country": "GB", "name": "X", "email": "x@example.org", "add": "y"},
        "/admin/users": {"email": "evil@example.org", "role": "admin", "add": "y"},
    }
    for url, data in posts.items():
        assert client.post(url, data={"csrf_token": token, **data}).status_code == 403, url
    assert overrides(app) == {}
    assert smtp.received == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Diplomat)) == 0
        assert [u.email for u in db.session.scalars(db.select(User))] == [MANAGER]


def test_admin_sees_the_admin_pages(admin):
    for page in ADMIN_PAGES:
        assert admin.get(page).status_code == 200, page


def test_admin_forms_build_without_deprecation_warnings(app):
    from campaign.forms import RelayForm, UserForm

    with app.test_request_context("/admin"), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        RelayForm()
        UserForm()


# --- log-in ------------------------------------------------------------------------------


def test_login_with_a_wrong_password_is_refused(app, client):
    add_user(app, ADMIN, Role.ADMIN)
    reply = login(client, ADMIN, "not the password")
    assert reply.status_code == 401
    assert "Wrong e-mail or password." in reply.get_data(as_text=True)
    with client.session_transaction() as session:
        assert "_user_id" not in session
    assert client.get("/admin").status_code == 302


def test_login_with_an_unknown_address_looks_the_same(app, client):
    add_user(app, ADMIN, Role.ADMIN)
    reply = login(client, "nobody@example.org", PASSWORD)
    assert reply.status_code == 401
    assert "Wrong e-mail or password." in reply.get_data(as_text=True)


def test_login_without_csrf_token_is_refused(app, client):
    add_user(app, ADMIN, Role.ADMIN)
    client.get("/login")
    reply = client.post("/login", data={"email": ADMIN, "password": PASSWORD})
    assert reply.status_code == 400
    assert client.get("/admin").status_code == 302


def test_login_then_logout(app, client):
    add_user(app, ADMIN, Role.ADMIN)
    reply = login(client, ADMIN)
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/manage"
    with client.session_transaction() as session:
        assert session.get("_user_id")
    page = client.get("/admin").get_data(as_text=True)
    assert client.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 302
    assert client.get("/admin").status_code == 302


def test_login_returns_to_a_local_next_page(app, client):
    add_user(app, ADMIN, Role.ADMIN)
    reply = login(client, ADMIN, next_url="/admin/diplomats")
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/admin/diplomats"


FOREIGN_NEXT = [
    "//evil.example",
    "//evil.example/admin",
    "https://evil.example",
    "https://evil.example/admin",
    "http:evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https%3A%2F%2Fevil.example",
    "%2F%2Fevil.example",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("next_url", ["/%09/evil.example", "/%0d%0a/evil.example", "/%00", "%7f"])
def test_control_characters_in_next_are_a_400(app, next_url):
    add_user(app, ADMIN, Role.ADMIN)
    client = app.test_client()
    assert client.get(f"/login?next={next_url}").status_code == 400
    token = csrf_token(client.get("/login").get_data(as_text=True))
    reply = client.post(
        f"/login?next={next_url}",
        data={"csrf_token": token, "email": ADMIN, "password": PASSWORD},
    )
    assert reply.status_code == 400


def test_login_ignores_a_next_page_on_another_site(app):
    add_user(app, ADMIN, Role.ADMIN)
    for next_url in FOREIGN_NEXT:
        client = app.test_client()
        reply = login(client, ADMIN, next_url=next_url)
        assert reply.status_code == 302, next_url
        location = reply.headers["Location"]
        # Browsers drop tabs and newlines from URLs and read "\" as "/"; judge as they do.
        seen = re.sub(r"[\t\r\n]", "", location).replace("\\", "/")
        assert urlsplit(seen).netloc == "", next_url
        assert urlsplit(seen).scheme == "", next_url
        assert "evil" not in seen, next_url
        assert location == "/manage", next_url


def test_disabled_staff_cannot_log_in(app, client):
    add_user(app, ADMIN, Role.ADMIN)
    with app.app_context():
        db.session.scalar(db.select(User).filter_by(email=ADMIN)).active = False
        db.session.commit()
    assert login(client, ADMIN).status_code == 401


# --- the relay screen --------------------------------------------------------------------


def test_relay_screen_shows_where_each_value_comes_from(admin, smtp):
    html = admin.get("/admin").get_data(as_text=True)
    assert source_of(html, "Host") == ("127.0.0.1", "test config")
    assert source_of(html, "Port") == (str(smtp.port), "test config")
    assert source_of(html, "Sender") == ("appeals@amnesty.test", "test config")
    assert source_of(html, "Organisation") == ("Amnesty Test Section", "test config")
    assert source_of(html, "Password") == ("not set", "default")
    assert source_of(html, "User") == ("—", "default")
    assert "local mail capture" not in html
    # The form starts from the values in use.
    fields = form_fields(html, "/admin")
    assert fields["relay_host"] == "127.0.0.1"
    assert fields["relay_port"] == str(smtp.port)
    assert fields["relay_security"] == "none"
    assert fields["relay_password"] == ""


def test_saving_host_port_password(app, admin, smtp):
    secret = "Sup3r-secret relay pässword"
    reply = relay_submit(
        admin, relay_host="relay.example.net", relay_port=2525, relay_password=secret
    )
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/admin"
    html = admin.get("/admin").get_data(as_text=True)
    assert "Relay settings saved" in html
    assert secret not in html
    assert "pässword" not in html and "p&#228;ssword" not in html
    assert source_of(html, "Host") == ("relay.example.net", "admin screen")
    assert source_of(html, "Port") == ("2525", "admin screen")
    assert source_of(html, "Password") == ("set", "admin screen")
    assert source_of(html, "Sender") == ("appeals@amnesty.test", "test config")
    assert form_fields(html, "/admin")["relay_password"] == ""

    # Only what changed is stored; the password only encrypted.
    stored = overrides(app)
    # The password is stored with the relay it was given for.
    assert set(stored) == {"relay_host", "relay_port", "relay_password", "relay_password_for"}
    assert stored["relay_password_for"] == {
        "host": "relay.example.net",
        "port": 2525,
        "username": None,
    }
    assert stored["relay_host"] == "relay.example.net"
    assert stored["relay_port"] == 2525
    assert stored["relay_password"] != secret
    assert secret not in str(stored["relay_password"])
    with app.app_context():
        assert decrypt_secret(stored["relay_password"]) == secret
        assert db.session.get(Setting, "relay_password").updated_by == ADMIN

    # Saving again without typing the password keeps it, and stores one more change only.
    assert relay_submit(admin, org_name="Amnesty Renamed").status_code == 302
    stored_again = overrides(app)
    assert set(stored_again) == set(stored) | {"org_name"}
    assert stored_again["relay_password"] == stored["relay_password"]
    html = admin.get("/admin").get_data(as_text=True)
    assert source_of(html, "Organisation") == ("Amnesty Renamed", "admin screen")
    assert secret not in html


def test_saving_unchanged_values_stores_nothing(app, admin):
    reply = relay_submit(admin)
    assert reply.status_code == 302
    assert overrides(app) == {}
    assert "nothing changed" in admin.get("/admin").get_data(as_text=True)


def test_revert_removes_every_override(app, admin, smtp):
    relay_submit(admin, relay_port=2525, relay_password="something-secret", org_name="Other")
    assert set(overrides(app)) == {"relay_port", "relay_password", "relay_password_for", "org_name"}
    reply = relay_submit(admin, button="revert")
    assert reply.status_code == 302
    assert overrides(app) == {}
    html = admin.get("/admin").get_data(as_text=True)
    assert source_of(html, "Port") == (str(smtp.port), "test config")
    assert source_of(html, "Password") == ("not set", "default")
    assert source_of(html, "Organisation") == ("Amnesty Test Section", "test config")


BAD_RELAY_VALUES = [
    ("relay_sender", "appeals@amnesty.test\r\nBcc: victim@example.org"),
    ("relay_sender", "appeals@amnesty.test\nBcc: victim@example.org"),
    ("relay_sender", "appeals@amnesty.test\rX: y"),
    ("relay_sender", "not an address"),
    ("org_name", "Amnesty\r\nBcc: victim@example.org"),
    ("relay_host", "relay.example.net\r\nRCPT TO:<victim@example.org>"),
    ("relay_username", "user\nname"),
    ("relay_port", "0"),
    ("relay_port", "70000"),
    ("relay_port", "25; rm"),
    ("relay_security", "plaintext-please"),
]


def test_bad_relay_values_are_refused_with_422(app, admin):
    for field, value in BAD_RELAY_VALUES:
        reply = relay_submit(admin, **{field: value})
        assert reply.status_code == 422, (field, value)
        assert 'class="error"' in reply.get_data(as_text=True), (field, value)
        assert overrides(app) == {}, (field, value)


def test_test_message_goes_to_the_admin_only(app, admin, smtp):
    app.config["RELAY_CHECK_PORTS"] = (25, 465, 587, smtp.port)
    no_confirmation(app)
    with app.app_context():
        db.session.add(
            Diplomat(target_state="ES", country="GB", name="Embassy", email="emb@maec.example.org")
        )
        db.session.commit()
    reply = submit(admin, "/admin", "/admin/test-message", "send")
    assert reply.status_code == 302
    assert len(smtp.received) == 1
    [mail] = smtp.received
    assert mail.rcpt_tos == [ADMIN]
    assert mail.mail_from == "appeals@amnesty.test"
    msg = mail.message
    assert [a.addr_spec for a in msg["To"].addresses] == [ADMIN]
    assert "Cc" not in msg and "Bcc" not in msg
    assert msg["Subject"] == "Appeal sender: relay test message"
    assert f"127.0.0.1:{smtp.port}" in msg.get_content()
    html = admin.get("/admin").get_data(as_text=True)
    assert f"The relay 127.0.0.1:{smtp.port} accepted a test message for {ADMIN}" in html


def test_test_message_reports_a_relay_that_refuses(app, admin, smtp):
    dead = free_port()  # nothing listens there
    app.config["RELAY_CHECK_PORTS"] = (25, 465, 587, dead)
    relay_submit(admin, relay_port=dead)
    reply = submit(admin, "/admin", "/admin/test-message", "send")
    assert reply.status_code == 302
    html = admin.get("/admin").get_data(as_text=True)
    assert "The relay could not be reached, or refused the connection" in html
    assert smtp.received == []


def test_test_message_needs_the_csrf_token(admin, smtp):
    reply = admin.post("/admin/test-message", data={"send": "y"})
    assert reply.status_code == 400
    assert smtp.received == []


def test_workers_use_new_relay_settings_without_restart(
    app, admin, client, smtp, work, second_smtp
):
    no_confirmation(app)
    port, handler = second_smtp
    # Before: the test config's relay.
    assert client.post(APPEALS_URL, json=supporter(email="one@example.org")).status_code == 202
    work()
    assert [m.rcpt_tos for m in smtp.received] == [["ministro@mju.es"]]

    assert relay_submit(admin, relay_port=port, org_name="Amnistía Nueva").status_code == 302
    reply = client.post(APPEALS_URL, json=supporter(email="two@example.org"))
    assert reply.status_code == 202 and reply.json["status"] == Status.QUEUED
    work()
    assert len(smtp.received) == 1  # nothing more on the old relay
    [mail] = handler.received
    assert mail.rcpt_tos == ["ministro@mju.es"]
    assert "Amnistía Nueva" in str(mail.message["From"])
    with app.app_context():
        status = db.session.scalar(db.select(Appeal.status).filter_by(email="two@example.org"))
    assert status == Status.SENT

    # And back again after a revert.
    relay_submit(admin, button="revert")
    client.post(APPEALS_URL, json=supporter(email="three@example.org"))
    work()
    assert len(smtp.received) == 2 and len(handler.received) == 1


# --- diplomats ---------------------------------------------------------------------------


def diplomat_rows(html: str) -> list[list[str]]:
    table = re.search(r'<table id="diplomats">(.*?)</table>', html, re.S)
    assert table
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]:
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        rows.append(cells)
    return rows


def test_diplomats_add_copy_delete(app, admin, client, smtp, work):
    no_confirmation(app)
    reply = submit(
        admin,
        "/admin/diplomats",
        "",
        "add",
        country="GB",
        name="Embassy of Spain in London",
        email="Emb.Londres@MAEC.example.org",
        fax="+44 20 7235 5555",
    )
    assert reply.status_code == 302
    html = admin.get("/admin/diplomats").get_data(as_text=True)
    assert "Added Embassy of Spain in London for United Kingdom." in html
    assert diplomat_rows(html) == [
        [
            "ES",
            "United Kingdom",
            "Embassy of Spain in London",
            "emb.londres@maec.example.org",
            "+44 20 7235 5555",
            "Delete",
        ]
    ]

    # A GB supporter's appeal gets the embassy in Cc; a French supporter's does not.
    client.post(APPEALS_URL, json=supporter(email="gb@example.org", country="GB"))
    client.post(APPEALS_URL, json=supporter(email="fr@example.org", country="FR"))
    work()
    by_sender = {str(m.message["Reply-To"].addresses[0].addr_spec): m for m in smtp.received}
    gb, fr = by_sender["gb@example.org"], by_sender["fr@example.org"]
    assert sorted(gb.rcpt_tos) == ["emb.londres@maec.example.org", "ministro@mju.es"]
    assert [a.addr_spec for a in gb.message["Cc"].addresses] == ["emb.londres@maec.example.org"]
    assert "Embassy of Spain in London" in gb.message.get_body(("plain",)).get_content()
    assert fr.rcpt_tos == ["ministro@mju.es"]
    assert "Cc" not in fr.message

    # Delete.
    page = admin.get("/admin/diplomats").get_data(as_text=True)
    [action] = re.findall(r'action="(/admin/diplomats/\d+/delete)"', page)
    reply = admin.post(action, data={"csrf_token": csrf_token(page)})
    assert reply.status_code == 302
    assert diplomat_rows(admin.get("/admin/diplomats").get_data(as_text=True)) == [["None yet."]]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Diplomat)) == 0


def test_diplomat_delete_needs_the_csrf_token(app, admin):
    submit(admin, "/admin/diplomats", "", "add", country="GB", name="Embassy")
    page = admin.get("/admin/diplomats").get_data(as_text=True)
    [action] = re.findall(r'action="(/admin/diplomats/\d+/delete)"', page)
    admin.post(action, data={})
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Diplomat)) == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"email": "not-an-address"},
        {"email": "emb@maec.example.org\r\nBcc: victim@example.org"},
        {"name": ""},
        {"country": "XX"},
    ],
)
def test_bad_diplomats_are_refused_with_422(app, admin, changes):
    data = {"country": "GB", "name": "Embassy", "email": "emb@maec.example.org", **changes}
    reply = submit(admin, "/admin/diplomats", "", "add", **data)
    assert reply.status_code == 422
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Diplomat)) == 0


def test_adding_the_same_diplomat_twice_is_a_422_not_a_crash(app, admin):
    data = {"country": "GB", "name": "Embassy of Spain", "email": "emb@maec.example.org"}
    assert submit(admin, "/admin/diplomats", "", "add", **data).status_code == 302
    reply = submit(admin, "/admin/diplomats", "", "add", **data)
    assert reply.status_code == 422
    assert "already" in reply.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Diplomat)) == 1
    # The session is still usable afterwards.
    assert admin.get("/admin/diplomats").status_code == 200


# --- campaign switches -------------------------------------------------------------------


def test_campaign_switches(app, admin, client):
    page = "/admin/campaigns/pavlov-extradition"
    fields = form_fields(admin.get(page).get_data(as_text=True), "")
    assert fields.get("confirmation_required") == "y"
    assert "paused" not in fields

    # Untick "confirmation required", tick "paused".
    data = {"csrf_token": fields["csrf_token"], "paused": "y", "save": "y"}
    assert admin.post(page, data=data).status_code == 302
    fields = form_fields(admin.get(page).get_data(as_text=True), "")
    assert "confirmation_required" not in fields
    assert fields.get("paused") == "y"
    assert client.post(APPEALS_URL, json=supporter()).status_code == 503

    data = {"csrf_token": fields["csrf_token"], "save": "y"}
    assert admin.post(page, data=data).status_code == 302
    reply = client.post(APPEALS_URL, json=supporter())
    assert reply.status_code == 202
    assert reply.json["status"] == Status.QUEUED


def test_unknown_campaign_page_goes_back_to_the_relay_screen(admin):
    reply = admin.get("/admin/campaigns/no-such-campaign")
    assert reply.status_code == 302
    assert reply.headers["Location"] == "/admin"


# --- users -------------------------------------------------------------------------------


def test_admin_adds_a_manager_who_can_log_in(app, admin):
    reply = submit(
        admin,
        "/admin/users",
        "/admin/users",
        "add",
        email="New.Manager@Example.ORG",
        role="manager",
    )
    assert reply.status_code == 200
    html = reply.get_data(as_text=True)
    created = re.search(r'<p[^>]*id="created">(.*?)</p>', html, re.S)
    assert created, html
    password = re.search(r"<code>(.*?)</code>", created.group(1)).group(1)
    assert len(password) >= 12
    assert html.count(password) == 1

    # Shown once only.
    again = admin.get("/admin/users").get_data(as_text=True)
    assert password not in again
    assert 'id="created"' not in again
    with app.app_context():
        user = db.session.scalar(db.select(User).filter(User.role == Role.MANAGER))
        assert user.password_hash != password and password not in user.password_hash

    # The new manager logs in (typing the address as it was given), must first choose a
    # password of their own (an admin saw this one), and then is a manager.
    other = app.test_client()
    reply = login(other, "New.Manager@Example.ORG", password)
    assert reply.status_code == 302
    assert other.get("/manage").headers["Location"] == "/account/password"
    reply = submit(
        other,
        "/account/password",
        "",
        "save",
        current=password,
        new="a password of my own",
        repeat="a password of my own",
    )
    assert reply.status_code == 302
    assert other.get("/manage").status_code == 200
    assert other.get("/admin/users").status_code == 403


@pytest.mark.parametrize(
    ("email", "role"),
    [
        ("not-an-address", "manager"),
        ("x@example.org", "root"),
        (ADMIN, "manager"),  # exists already
        ("admin@EXAMPLE.org", "manager"),  # the same address, typed differently
    ],
)
def test_bad_new_users_are_refused(app, admin, email, role):
    reply = submit(admin, "/admin/users", "/admin/users", "add", email=email, role=role)
    assert reply.status_code == 422
    assert 'id="created"' not in reply.get_data(as_text=True)
    with app.app_context():
        assert [u.email for u in db.session.scalars(db.select(User))] == [ADMIN]
