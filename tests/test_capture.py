"""campaign.capture: the local SMTP capture, on a real aiosmtpd server on loopback."""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from campaign import capture
from conftest import free_port


class Capture:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    def send(self, mail_from: str, rcpt_tos: list[str], msg: EmailMessage | bytes) -> None:
        data = msg if isinstance(msg, bytes) else msg.as_bytes(policy=policy.SMTP)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as conn:
            refused = conn.sendmail(mail_from, rcpt_tos, data)
        assert refused == {}


def _start(directory: Path) -> tuple[Controller, Capture]:
    port = free_port()
    controller = Controller(capture.MaildirHandler(directory), hostname="127.0.0.1", port=port)
    controller.start()
    return controller, Capture(directory, port)


@pytest.fixture
def cap(tmp_path: Path) -> Iterator[Capture]:
    controller, server = _start(tmp_path / "cap")
    try:
        yield server
    finally:
        controller.stop()


def message(subject: str, text: str = "Hello.\n", to: str = "ministro@mju.es") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Ana García via Amnesty <appeals@amnesty.test>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    return msg


def test_three_messages_newest_first_with_their_envelopes(cap):
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], message("first"))
    cap.send(
        "appeals@amnesty.test",
        ["ministro@mju.es", "emb.londres@maec.test"],
        message("second", "Segundo mensaje: garantías.\n"),
    )
    cap.send("bounces@amnesty.test", ["ana@example.org"], message("third — ñ"))

    assert capture.count(cap.directory) == 3
    items = capture.latest(cap.directory)
    assert [i.subject for i in items] == ["third — ñ", "second", "first"]
    third, second, first = items
    assert third.envelope_from == "bounces@amnesty.test"
    assert third.envelope_to == ["ana@example.org"]
    assert second.envelope_from == "appeals@amnesty.test"
    assert second.envelope_to == ["ministro@mju.es", "emb.londres@maec.test"]
    assert first.envelope_to == ["ministro@mju.es"]
    assert second.body("plain").replace("\r\n", "\n") == "Segundo mensaje: garantías.\n"
    assert second.body("html") == ""
    assert second.message["To"] == "ministro@mju.es"
    assert third.received >= second.received >= first.received
    assert len({i.key for i in items}) == 3

    assert [i.subject for i in capture.latest(cap.directory, 2)] == ["third — ñ", "second"]


def test_get_by_key(cap):
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], message("one"))
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], message("two"))
    for item in capture.latest(cap.directory):
        found = capture.get(cap.directory, item.key)
        assert found is not None
        assert found.key == item.key
        assert found.subject == item.subject
        assert found.envelope_to == item.envelope_to
        assert found.message.as_bytes() == item.message.as_bytes()


@pytest.mark.parametrize("key", ["nope", "", "../cap", "new", "cur", "tmp", ".", ".."])
def test_unknown_key_is_none(cap, key):
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], message("one"))
    assert capture.get(cap.directory, key) is None


def test_missing_or_empty_directory_is_empty_not_an_error(tmp_path):
    missing = tmp_path / "never-created"
    assert capture.latest(missing) == []
    assert capture.count(missing) == 0
    assert capture.get(missing, "anything") is None
    assert not missing.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert capture.latest(empty) == []
    assert capture.count(empty) == 0
    assert capture.get(empty, "anything") is None


def test_capture_into_an_existing_empty_directory(tmp_path):
    """A directory made beforehand (a mounted volume, mkdir by hand) must work too."""
    directory = tmp_path / "made-by-hand"
    directory.mkdir()
    controller, server = _start(directory)
    try:
        server.send("appeals@amnesty.test", ["ministro@mju.es"], message("into a bare dir"))
    finally:
        controller.stop()
    [item] = capture.latest(directory)
    assert item.subject == "into a bare dir"


def test_messages_a_mail_reader_marked_seen_are_still_listed(cap):
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], message("read me"))
    [item] = capture.latest(cap.directory)
    # A Maildir reader moves new/<key> to cur/<key>:2,S once it has shown it.
    os.rename(
        cap.directory / "new" / item.key,
        cap.directory / "cur" / f"{item.key}:2,S",
    )
    assert capture.count(cap.directory) == 1
    found = capture.get(cap.directory, item.key)
    assert found is not None and found.subject == "read me"
    assert [i.key for i in capture.latest(cap.directory)] == [item.key]


def test_the_message_cannot_forge_its_envelope(cap):
    forged = (
        b"X-Capture-Envelope-From: minister@mju.es\r\n"
        b"X-Capture-Envelope-To: everyone@example.org\r\n"
        b"From: appeals@amnesty.test\r\nTo: ministro@mju.es\r\nSubject: forged\r\n\r\nbody\r\n"
    )
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], forged)
    [item] = capture.latest(cap.directory)
    assert item.envelope_from == "appeals@amnesty.test"
    assert item.envelope_to == ["ministro@mju.es"]
    assert item.body("plain").replace("\r\n", "\n") == "body\n"


def test_message_is_stored_byte_for_byte(cap):
    raw = (
        b"From: appeals@amnesty.test\r\nTo: ministro@mju.es\r\n"
        b"Subject: =?utf-8?b?w5E=?=\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"garant=C3=ADas\r\n"
    )
    cap.send("appeals@amnesty.test", ["ministro@mju.es"], raw)
    [item] = capture.latest(cap.directory)
    assert item.subject == "Ñ"
    assert item.body("plain").replace("\r\n", "\n") == "garantías\n"
    stored = next((cap.directory / "new").iterdir()).read_bytes()
    assert stored.endswith(raw)


def test_same_clock_tick_still_lists_newest_first(tmp_path):
    """File systems with coarse clocks give messages a moment apart the same time; the
    order of arrival then comes from the Maildir keys, read as numbers."""
    directory = tmp_path / "cap"
    for sub in ("tmp", "new", "cur"):
        (directory / sub).mkdir(parents=True)
    # Keys as mailbox.Maildir makes them: <seconds>.M<microseconds>P<pid>Q<counter>.<host>
    arrivals = [
        ("1700000000.M99990P4242Q1.host", "first"),
        ("1700000000.M100010P4242Q2.host", "second"),
        ("1700000000.M100010P4242Q3.host", "third"),
        ("1700000001.M5P4242Q4.host", "fourth"),
    ]
    for key, subject in arrivals:
        path = directory / "new" / key
        path.write_bytes(
            b"X-Capture-Envelope-From: appeals@amnesty.test\r\n"
            b"X-Capture-Envelope-To: ministro@mju.es\r\n"
            b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n"
        )
        os.utime(path, ns=(1_700_000_001_000_000_000,) * 2)
    assert [i.subject for i in capture.latest(directory)] == [
        "fourth",
        "third",
        "second",
        "first",
    ]
