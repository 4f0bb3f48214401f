"""DKIM: every mail the app sends is signed, and dkimpy (an independent implementation)
verifies what a real SMTP server on loopback received, against the record that
``flask dkim dns`` printed. Real Redis, real RQ, real SQLite."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest

from campaign import mime
from campaign.db import db
from campaign.dkim import DkimError, create_key, signer_from, strip_signature
from campaign.mail import Outgoing, staff_copy
from campaign.models import Appeal, CampaignOption, Diplomat, Status
from conftest import _base_config, fresh_app, run_jobs
from helpers import APPEALS_URL, confirmation_token, supporter

SELECTOR, DOMAIN = "appeals2026", "amnesty.test"
DNS_LINE = re.compile(r'^(\S+)\._domainkey\.(\S+) TXT "(v=DKIM1; k=rsa; p=[A-Za-z0-9+/=]+)"$')


@pytest.fixture
def signed_app(
    database_urls: dict[str, str],
    redis: Any,
    redis_url: str,
    smtp: Any,
    tmp_path: Path,
    monkeypatch,
) -> Iterator[Any]:
    """An app whose instance folder is empty: no key until ``dkim init`` makes one."""
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    config = _base_config(database_urls["sqlite"], redis_url, smtp.port)
    with fresh_app(config) as app:
        yield app


def _published(app: Any) -> bytes:
    """``dkim init``, then the record as ``dkim dns`` prints it."""
    runner = app.test_cli_runner()
    made = runner.invoke(args=["dkim", "init", "--selector", SELECTOR, "--domain", DOMAIN])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(args=["dkim", "dns"])
    assert shown.exit_code == 0, shown.output
    [line] = shown.output.splitlines()
    found = DNS_LINE.match(line)
    assert found, line
    assert (found.group(1), found.group(2)) == (SELECTOR, DOMAIN)
    return found.group(3).encode()


def _dns(record: bytes):
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def test_init_writes_a_private_key_and_refuses_to_overwrite_it(signed_app):
    record = _published(signed_app)
    key = Path(signed_app.instance_path) / "dkim.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert signer_from(signed_app.config, signed_app.instance_path).key.key_size == 2048
    runner = signed_app.test_cli_runner()
    again = runner.invoke(args=["dkim", "init", "--selector", "other", "--domain", DOMAIN])
    assert again.exit_code != 0 and "--force" in again.output
    shown = runner.invoke(args=["dkim", "dns"])
    assert shown.output.strip().endswith(f'"{record.decode()}"')  # the same key


@pytest.mark.parametrize(
    "selector", ["a b", "x\r\nBcc: victim@example.org", "é", "-lead", "x" * 300, ""]
)
def test_init_refuses_names_that_are_not_dns_names(signed_app, selector):
    runner = signed_app.test_cli_runner()
    result = runner.invoke(args=["dkim", "init", "--selector", selector, "--domain", DOMAIN])
    assert result.exit_code != 0
    assert "DNS names" in result.output
    assert not (Path(signed_app.instance_path) / "dkim.key").exists()


def test_dns_without_a_key_says_what_to_do(signed_app):
    result = signed_app.test_cli_runner().invoke(args=["dkim", "dns"])
    assert result.exit_code != 0
    assert "dkim init" in result.output


def test_every_mail_verifies_with_dkimpy_and_tampering_breaks_it(signed_app, smtp, redis):
    app, client = signed_app, signed_app.test_client()
    record = _published(app)
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    run_jobs(app, redis)  # the confirmation
    [confirmation] = smtp.received
    token = confirmation_token(confirmation.message.get_body(("plain",)).get_content())
    assert client.post(f"/api/v1/confirm/{token}").status_code == 200
    run_jobs(app, redis)  # the appeal
    run_jobs(app, redis)  # the receipt
    kinds = {"confirmation": 0, "appeal": 0, "receipt": 0}
    for mail in smtp.received:
        assert mail.data.startswith(b"DKIM-Signature: v=1;"), mail.data[:80]
        head = mail.data.partition(b"\r\n\r\n")[0]
        signature = head.partition(b"\r\nFrom:")[0].replace(b"\r\n\t", b"")
        tags = [t.split(b"=")[0].strip() for t in signature.split(b":", 1)[1].split(b";")]
        assert b"t" not in tags and b"x" not in tags  # no timestamp: see dkim.py
        assert dkimpy.verify(mail.data, dnsfunc=_dns(record)), mail.data[:1200]
        if "ministro@mju.es" in mail.rcpt_tos:
            kinds["appeal"] += 1
        elif b"/confirm/" in mail.data.replace(b"=\r\n", b""):
            kinds["confirmation"] += 1
        else:
            kinds["receipt"] += 1
    assert kinds == {"confirmation": 1, "appeal": 1, "receipt": 1}

    appeal = next(m for m in smtp.received if "ministro@mju.es" in m.rcpt_tos).data
    for before, after in [
        (b"Subject: ", b"Subject: Re: "),
        (b"Reply-To: ", b"Reply-To: x@evil.test, "),
        (b"\r\n\r\n", b"\r\nCc: someone@evil.test\r\n\r\n"),  # a Cc added: oversigned
        (b"--\r\n", b"--\r\nP.S. not from the supporter\r\n"),
    ]:
        assert before in appeal
        tampered = appeal.replace(before, after, 1) if before != b"--\r\n" else appeal + after[4:]
        assert not dkimpy.verify(tampered, dnsfunc=_dns(record)), before
    # Another key under the same name: nothing verifies.
    other = create_key(str(Path(app.instance_path) / "other"), SELECTOR, DOMAIN).record()
    assert not dkimpy.verify(appeal, dnsfunc=_dns(other.encode()))


def test_a_retry_is_the_same_bytes_and_the_same_signature(signed_app, smtp, redis):
    app, client = signed_app, signed_app.test_client()
    record = _published(app)
    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.add(
            Diplomat(target_state="ES", country="GB", name="Embassy", email="emb@maec.test")
        )
        db.session.commit()
    smtp.handler.rcpt_replies = {"ministro@mju.es": "451 4.3.0 Try again later"}
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    run_jobs(app, redis)
    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        assert appeal.status == Status.RETRYING
        db.session.execute(db.update(Appeal).values(next_attempt_at=None))  # time passes
        db.session.commit()
    smtp.handler.rcpt_replies = {}
    run_jobs(app, redis)
    first, second = smtp.received
    assert (first.rcpt_tos, second.rcpt_tos) == (["emb@maec.test"], ["ministro@mju.es"])
    assert first.data == second.data
    assert dkimpy.verify(second.data, dnsfunc=_dns(record))


def test_a_staff_copy_in_test_mode_is_signed_anew(signed_app):
    record = _published(signed_app)
    with signed_app.app_context():
        from campaign import dkim

        data = dkim.sign(
            mime.build(
                sender=("Ana via Org", "appeals@amnesty.test"),
                reply_to=("Ana", "ana@example.org"),
                to=[("Ministro", "ministro@mju.es")],
                cc=[("Embassy", "emb@maec.test")],
                subject="Aleksandr Pavlov",
                text="Texto\n",
                html="<p>Texto</p>",
                message_id="<1@amnesty.test>",
                date=1_700_000_000,
            )
        )
        original = Outgoing("appeals@amnesty.test", ["ministro@mju.es"], data, "<1@amnesty.test>")
        copy = staff_copy(original, "staff@amnesty.test", ["ministro@mju.es", "emb@maec.test"])
    assert copy.data.count(b"DKIM-Signature:") == 1
    assert b"Subject: [TEST] Aleksandr Pavlov" in copy.data
    assert dkimpy.verify(copy.data, dnsfunc=_dns(record))
    assert strip_signature(copy.data).startswith(b"From: ")


def test_a_named_key_file_that_is_missing_or_not_a_key_is_an_error(tmp_path):
    config = {
        "DKIM_KEY_FILE": str(tmp_path / "nope.pem"),
        "DKIM_SELECTOR": "s",
        "DKIM_DOMAIN": "d.test",
    }
    with pytest.raises(DkimError, match="does not exist"):
        signer_from(config, str(tmp_path))
    (tmp_path / "nope.pem").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(DkimError, match="not an unencrypted PEM"):
        signer_from(config, str(tmp_path))
    assert signer_from({}, str(tmp_path)) is None  # nothing configured: mail goes unsigned
