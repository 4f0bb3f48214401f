"""Bounces: appeals leave with a bounce address of their own; the reports that come back
are read from a real IMAP server (Debian's Dovecot, started here on loopback with a
config of this test's own), fed with real report formats (Postfix, Exim, out-of-office
replies) by IMAP APPEND; a hard bounce flags its address and holds its mail until a
manager releases it. Real SMTP sink, Redis, RQ, SQLite and PostgreSQL."""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from campaign import bounces
from campaign.db import db
from campaign.delivery.dispatcher import sweep
from campaign.models import (
    Appeal,
    Bounce,
    CampaignOption,
    Delivery,
    Diplomat,
    Recipient,
    Role,
    Status,
    TargetFlag,
)
from campaign.users import create_user
from conftest import free_port
from helpers import APPEALS_URL, csrf_token, stored_appeal, supporter

DATA = Path(__file__).parent / "data" / "bounces"
DOVECOT = "/usr/sbin/dovecot"

SAMPLE_TOKEN = "17-mz4kq7w2pd"
"""The token written in the samples, replaced by a real appeal's."""
SAMPLE_MESSAGE_ID = "<6a1f3c9e2b7d4e8fa0c5b1d2e3f4a5b6@amnesty.test>"

MINISTER, EMBASSY, CONSULATE = "ministro@mju.es", "emb@maec.test", "con@maec.test"
USER, PASSWORD = "bounces", "s3cret-imap"
MANAGER, MANAGER_PASSWORD = "manager@example.org", "correct horse battery staple"


def sample(name: str, token: str = SAMPLE_TOKEN, message_id: str = SAMPLE_MESSAGE_ID) -> bytes:
    """A sample report, as it would come back for the appeal of ``token``; CRLF line
    ends, as IMAP carries them."""
    raw = (DATA / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return raw.replace(SAMPLE_TOKEN.encode(), token.encode()).replace(
        SAMPLE_MESSAGE_ID.encode(), message_id.encode()
    )


# --- Dovecot -----------------------------------------------------------------------------


def _dovecot_config(home: Path, port: int) -> str:
    """A Dovecot of this test's own: loopback, no TLS, a passwd-file of one user, mail in
    ``home``. Unprivileged, every process runs as this user. As root (CI), Dovecot's
    login processes refuse to run as root and it gives no mailbox to uid 0: logins run
    as dovenull (or nobody), the mailbox belongs to nobody, chrooted into ``home/mail``
    so that nobody needs no way through the test's private temporary folders."""
    base, mail = home / "run", home / "mail"
    (mail / USER).mkdir(parents=True)
    (home / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    lines = [
        "protocols = imap",
        "listen = 127.0.0.1",
        f"base_dir = {base}",
        f"state_dir = {base}/state",
        f"instance_name = test-bounces-{port}",
        "ssl = no",
        "disable_plaintext_auth = no",
        "auth_mechanisms = plain login",
        f"log_path = {home}/dovecot.log",
        "passdb {",
        "  driver = passwd-file",
        f"  args = scheme=PLAIN username_format=%u {home}/passwd",
        "}",
        "service imap-login {",
        "  inet_listener imap {",
        "    address = 127.0.0.1",
        f"    port = {port}",
        "  }",
        "  inet_listener imaps {",
        "    port = 0",
        "  }",
    ]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        try:
            login = pwd.getpwnam("dovenull").pw_name
        except KeyError:
            login = nobody.pw_name
        os.chown(mail / USER, nobody.pw_uid, nobody.pw_gid)
        mail.chmod(0o755)
        lines += [
            "}",
            "default_internal_user = root",
            "default_internal_group = root",
            f"default_login_user = {login}",
            f"valid_chroot_dirs = {mail}",
            f"mail_chroot = {mail}",
            "mail_location = maildir:~/Maildir",
            "userdb {",
            "  driver = static",
            f"  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home=/%u",
            "}",
        ]
    else:
        me = pwd.getpwuid(os.geteuid())
        lines += [
            "  chroot =",
            "}",
            "service anvil {",
            "  chroot =",
            "}",
            f"default_internal_user = {me.pw_name}",
            f"default_internal_group = {grp.getgrgid(me.pw_gid).gr_name}",
            f"default_login_user = {me.pw_name}",
            f"mail_location = maildir:{mail}/%u/Maildir",
            "userdb {",
            "  driver = static",
            f"  args = uid={me.pw_uid} gid={me.pw_gid} home={mail}/%u",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _imap(url: str) -> imaplib.IMAP4:
    box = bounces.Mailbox.parse(url)
    session = imaplib.IMAP4(box.host, box.port, timeout=5)
    try:
        session.login(box.user, box.password)
        session.select("INBOX")
    except BaseException:
        session.shutdown()
        raise
    return session


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Dovecot; yields the bounce mailbox's URL."""
    if not os.path.exists(DOVECOT):
        pytest.skip("Dovecot is not installed (Debian package dovecot-imapd)")
    home = tmp_path_factory.mktemp("dovecot")
    port = free_port()
    config = home / "dovecot.conf"
    config.write_text(_dovecot_config(home, port))
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"imap://{USER}:{PASSWORD}@127.0.0.1:{port}/INBOX"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _imap(url).logout()
                break
            except (OSError, imaplib.IMAP4.error) as e:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = home / "dovecot.log"
                    output = process.stdout.read() if process.stdout else b""
                    detail = (log.read_text() if log.exists() else "") + output.decode()
                    pytest.fail(f"Dovecot did not start: {e}\n{detail}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def mailbox(dovecot: str) -> Iterator[str]:
    """The bounce mailbox, empty."""
    session = _imap(dovecot)
    try:
        _, count = session.select("INBOX")
        if int(count[0] or 0):
            session.store("1:*", "+FLAGS", "(\\Deleted)")
            session.expunge()
    finally:
        session.logout()
    yield dovecot


def append(url: str, raw: bytes) -> None:
    session = _imap(url)
    kind, _ = session.append("INBOX", None, None, raw)
    assert kind == "OK"
    session.logout()


def unseen(url: str) -> int:
    session = _imap(url)
    _, found = session.search(None, "UNSEEN")
    session.logout()
    return len((found[0] or b"").split())


# --- Reading reports (no database) -------------------------------------------------------


@pytest.fixture
def keyed() -> Iterator[Flask]:
    app = Flask(__name__)
    app.secret_key = "test-secret-key"
    with app.app_context():
        yield app


def test_a_token_names_its_appeal_and_nothing_else(keyed):
    token = bounces.token_for(4321)
    number, _, mac = token.partition("-")
    assert number == "4321" and len(mac) == bounces.MAC_LENGTH and mac == mac.lower()
    assert bounces.appeal_for(token) == 4321
    assert bounces.appeal_for(token.upper()) == 4321  # an MTA that shouts the local part
    assert bounces.appeal_for(f"4322-{mac}") is None  # another appeal's id, same signature
    assert bounces.appeal_for(f"4321-{'a' * bounces.MAC_LENGTH}") is None
    assert bounces.appeal_for("not-a-token") is None
    assert bounces.envelope_sender(7, "bounces@org.example", "x.test") == (
        f"bounces+{bounces.token_for(7)}@org.example"
    )
    assert bounces.envelope_sender(7, "bounces", "amnesty.test") == (
        f"bounces+{bounces.token_for(7)}@amnesty.test"
    )
    keyed.secret_key = "another-key"
    assert bounces.appeal_for(token) is None


@pytest.mark.parametrize(
    ("name", "kind", "failures", "reason_has"),
    [
        ("postfix-hard.eml", "bounce", {MINISTER: "hard"}, ["5.1.1", "User unknown"]),
        ("exim-failed.eml", "bounce", {EMBASSY: "hard"}, ["550 5.1.1", "RCPT TO"]),
        ("postfix-delayed.eml", "bounce", {CONSULATE: "soft"}, ["4.4.1", "timed out"]),
        ("out-of-office-auto-submitted.eml", bounces.AUTO_REPLY, {}, []),
        ("out-of-office-subject-only.eml", bounces.AUTO_REPLY, {}, []),
    ],
)
def test_reports_are_read(keyed, name, kind, failures, reason_has):
    token = bounces.token_for(17)
    report = bounces.parse(sample(name, token))
    assert report.kind == kind
    assert {f.address: f.kind for f in report.failures} == failures
    for failure in report.failures:
        for words in reason_has:
            assert words in failure.reason
    if kind == "bounce":
        assert report.appeal_id == 17
        assert report.original_message_id == SAMPLE_MESSAGE_ID
        assert report.report_id.startswith("<") and report.report_id.endswith(">")


def test_a_forged_token_names_no_appeal(keyed):
    report = bounces.parse(sample("postfix-hard.eml", "17-aaaaaaaaaa"))
    assert report.kind == "bounce" and report.appeal_id is None


def test_the_mailbox_url_keeps_its_password_out_of_sight():
    box = bounces.Mailbox.parse("imaps://bounce%40org:p%2Fss@mail.org.example/Bounces")
    assert (box.secure, box.host, box.port, box.user, box.password, box.folder) == (
        True,
        "mail.org.example",
        993,
        "bounce@org",
        "p/ss",
        "Bounces",
    )
    assert "p/ss" not in str(box) and "p%2Fss" not in str(box)
    assert bounces.Mailbox.parse("imap://u:p@127.0.0.1").port == 143
    with pytest.raises(ValueError):
        bounces.Mailbox.parse("pop3://u:p@host/")


# --- The whole path ----------------------------------------------------------------------


def _setup(app: Any) -> None:
    app.config["BOUNCE_ADDRESS"] = "bounces@amnesty.test"
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.add_all(
            [
                Diplomat(target_state="ES", country="GB", name="Embassy", email=EMBASSY),
                Diplomat(target_state="ES", country="GB", name="Consulate", email=CONSULATE),
            ]
        )
        db.session.commit()


def _submit(client: Any, email: str, country: str = "GB") -> None:
    reply = client.post(APPEALS_URL, json=supporter(email=email, country=country))
    assert reply.status_code == 202, reply.get_data(as_text=True)


_appeal = stored_appeal


def _copies(app: Any, email: str) -> dict[str, Recipient]:
    with app.app_context():
        rows = db.session.scalars(
            db.select(Recipient).join(Appeal).where(Appeal.email == email)
        ).all()
        db.session.expunge_all()
        return {r.address: r for r in rows}


def test_without_a_bounce_address_the_envelope_sender_stays(app, client, smtp, work):
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()
    _submit(client, "ana@example.org")
    work()
    [received] = smtp.received
    assert received.mail_from == "appeals@amnesty.test"


def test_bounces_from_the_mailbox_hold_mail_until_a_manager_releases_it(
    app, client, smtp, work, mailbox
):
    _setup(app)
    app.config["BOUNCE_IMAP_URL"] = mailbox

    # Ana's appeal goes, with a bounce address of its own; From and Reply-To as before.
    _submit(client, "ana@example.org")
    work()
    ana = _appeal(app, "ana@example.org")
    assert ana.status == Status.SENT
    [received] = smtp.received
    with app.app_context():
        token = bounces.token_for(ana.id)
    assert received.mail_from == f"bounces+{token}@amnesty.test"
    assert received.message["From"].addresses[0].addr_spec == "appeals@amnesty.test"
    assert received.message["Reply-To"].addresses[0].addr_spec == "ana@example.org"
    assert set(received.rcpt_tos) == {MINISTER, EMBASSY, CONSULATE}  # one envelope
    message_id = received.message["Message-ID"]

    # Bob's copy to the minister waits to be retried; Carl's appeal is not tried yet;
    # Dora writes from France, where no diplomat of ours is.
    smtp.handler.rcpt_replies = {MINISTER: "451 4.3.0 Temporary lookup failure"}
    _submit(client, "bob@example.org")
    work()
    smtp.handler.rcpt_replies = {}
    assert _appeal(app, "bob@example.org").status == Status.RETRYING
    _submit(client, "carl@example.org")
    _submit(client, "dora@example.org", country="FR")

    # The reports come back to the bounce mailbox.
    for name in (
        "postfix-hard.eml",
        "exim-failed.eml",
        "postfix-delayed.eml",
        "out-of-office-auto-submitted.eml",
        "out-of-office-subject-only.eml",
    ):
        append(mailbox, sample(name, token, message_id))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["appeals", "bounces"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "read 5, hard 2, soft 1, auto_reply 2"
    assert PASSWORD not in result.output
    assert unseen(mailbox) == 0

    copies = _copies(app, "ana@example.org")
    assert copies[MINISTER].status == Delivery.BOUNCED
    assert copies[MINISTER].bounced_at is not None
    assert "550 5.1.1" in copies[MINISTER].last_reply
    assert "User unknown" in copies[MINISTER].last_reply
    assert copies[EMBASSY].status == Delivery.BOUNCED
    assert copies[CONSULATE].status == Delivery.ACCEPTED  # delayed: only counted
    with app.app_context():
        kinds = {(b.address, b.kind) for b in db.session.scalars(db.select(Bounce))}
        flags = {f.address: f.decision for f in db.session.scalars(db.select(TargetFlag))}
    assert kinds == {(MINISTER, "hard"), (EMBASSY, "hard"), (CONSULATE, "soft")}
    assert flags == {MINISTER: None, EMBASSY: None}

    # Everything still to go to a flagged address waits; the minister's copy of Bob's,
    # Carl's and Dora's letters.
    for email in ("bob@example.org", "carl@example.org", "dora@example.org"):
        held = _appeal(app, email)
        assert held.status == Status.HELD, email
        assert held.status_reason == bounces.hold_reason(MINISTER)

    # A report read twice counts once.
    append(mailbox, sample("postfix-hard.eml", token, message_id))
    result = runner.invoke(args=["appeals", "bounces"])
    assert result.output.strip() == "read 1, duplicate 1"
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Bounce)) == 3

    # The console: each address's bounces; release the minister's, after a confirmation.
    with app.app_context():
        create_user(MANAGER, Role.MANAGER, MANAGER_PASSWORD)
    login = csrf_token(client.get("/login").get_data(as_text=True))
    client.post(
        "/login", data={"csrf_token": login, "email": MANAGER, "password": MANAGER_PASSWORD}
    )
    page = client.get("/manage/bounces").get_data(as_text=True)
    assert 'href="/manage/bounces"' in page  # in the console's navigation
    rows = _rows(page)
    assert rows[MINISTER][1:3] == ["1", "0"] and "flagged" in rows[MINISTER][5]
    assert rows[EMBASSY][1:3] == ["1", "0"] and "flagged" in rows[EMBASSY][5]
    assert rows[CONSULATE][1:3] == ["0", "1"] and "not flagged" in rows[CONSULATE][5]
    assert rows[MINISTER][6] == "3"
    assert re.search(r'href="/admin/addresses\?old=ministro(%40|@)mju\.es"', page)
    confirm = client.get("/manage/bounces/release", query_string={"address": MINISTER})
    assert confirm.status_code == 200
    text = confirm.get_data(as_text=True)
    assert "send <strong>3</strong> held appeals" in text
    # Without the form's CSRF token, nothing happens.
    client.post("/manage/bounces/release", data={"address": MINISTER})
    assert _appeal(app, "carl@example.org").status == Status.HELD
    reply = client.post(
        "/manage/bounces/release", data={"csrf_token": csrf_token(text), "address": MINISTER}
    )
    assert reply.status_code == 302
    with app.app_context():
        flag = db.session.get(TargetFlag, MINISTER)
        assert flag.decision == bounces.RELEASED and flag.decided_by == MANAGER
    for email in ("bob@example.org", "carl@example.org", "dora@example.org"):
        assert _appeal(app, email).status == Status.QUEUED, email

    # The embassy is still flagged: the dispatcher holds Carl's letter (never tried, it
    # would go to the embassy) before it is handed out; Bob's (only the minister's copy
    # is pending) and Dora's (France) go.
    with app.app_context():
        sweep()
        db.session.remove()
    carl = _appeal(app, "carl@example.org")
    assert carl.status == Status.HELD and carl.status_reason == bounces.hold_reason(EMBASSY)
    work()
    assert _appeal(app, "bob@example.org").status == Status.SENT
    assert _appeal(app, "dora@example.org").status == Status.SENT
    assert EMBASSY not in {r for m in smtp.received[2:] for r in m.rcpt_tos}

    # A new appeal bound for the embassy waits too, however it became due.
    _submit(client, "emil@example.org")
    work()
    assert _appeal(app, "emil@example.org").status == Status.HELD

    # The single appeal's page shows the bounced copy.
    page = client.get(f"/manage/appeals/{ana.id}").get_data(as_text=True)
    assert "bounced" in page and "User unknown" in page


def _rows(html: str) -> dict[str, list[str]]:
    import html as htmlmod

    found = re.search(r'<table id="bounces">(.*?)</table>', html, re.S)
    assert found
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", found.group(1), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if cells:
            text = [" ".join(htmlmod.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells]
            rows[text[0]] = text
    return rows


def test_a_bounce_after_a_release_flags_again_one_before_it_does_not(app, client, smtp, work):
    _setup(app)
    _submit(client, "ana@example.org")
    work()
    ana = _appeal(app, "ana@example.org")
    with app.app_context():
        token = bounces.token_for(ana.id)
        bounces.record(bounces.parse(sample("postfix-hard.eml", token)))
        bounces.decide(MINISTER, bounces.RELEASED, actor="tester")
        db.session.commit()
        # The same copy's bounce, reported again by another report: the release stands.
        late = sample("postfix-hard.eml", token).replace(b"4Bq9Zt2Lw0z9vK3", b"4Bq9Zt2Lw0z9vK4")
        assert bounces.record(bounces.parse(late)) == {"hard": 1}
        db.session.commit()
        assert db.session.get(TargetFlag, MINISTER).decision == bounces.RELEASED
    # A copy accepted after the release bounces: flagged again.
    _submit(client, "bob@example.org")
    work()
    bob = _appeal(app, "bob@example.org")
    with app.app_context():
        token = bounces.token_for(bob.id)
        again = sample("postfix-hard.eml", token).replace(b"4Bq9Zt2Lw0z9vK3", b"4Bq9Zt2Lw0z9vK5")
        bounces.record(bounces.parse(again))
        db.session.commit()
        assert db.session.get(TargetFlag, MINISTER).decision is None


def test_the_command_needs_a_mailbox(app):
    result = app.test_cli_runner().invoke(args=["appeals", "bounces"])
    assert result.exit_code != 0
    assert "BOUNCE_IMAP_URL" in result.output


def test_dovecot_is_what_the_test_runs(dovecot):
    """The mailbox really is Dovecot on loopback (not a stand-in)."""
    box = bounces.Mailbox.parse(dovecot)
    with socket.create_connection((box.host, box.port), 5) as s:
        assert b"Dovecot" in s.recv(200)
