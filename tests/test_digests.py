"""Digests (campaign/digests.py): one message per target instead of one per supporter.
Real SMTP sink on loopback, real Redis and RQ, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from campaign import digest_message, digests
from campaign.db import db, utcnow
from campaign.models import Appeal, CampaignOption, Digest, Diplomat, Mode, Recipient, Status
from helpers import APPEALS_URL, csrf_token, supporter

SLUG = "pavlov-extradition"
MINISTER = "ministro@mju.es"
EMBASSY = "emb.londres@maec.test"

HOSTILE_NAME = "Eve\r\nBcc: victim@example.org <b>bold</b>"
LONG_SENTENCE = '=HYPERLINK("http://evil.test") ' + "x" * 10_240
RTL_NAME = "\u202eأحمد 🕊️ Ahmed"


def _mode(app, mode=Mode.DIGEST, hours=24, cap=None, confirmation=False):
    with app.app_context():
        db.session.merge(
            CampaignOption(
                slug=SLUG,
                confirmation_required=confirmation,
                delivery_mode=mode,
                digest_hours=hours,
                daily_cap=cap,
            )
        )
        db.session.commit()


def _embassy(app):
    with app.app_context():
        db.session.add(Diplomat(target_state="ES", country="GB", name="Embajada", email=EMBASSY))
        db.session.commit()


def _submit(client, n, country="GB", start=0):
    for i in range(start, start + n):
        body = supporter(email=f"s{i}@example.org", country=country, name=f"Supporter {i}")
        assert client.post(APPEALS_URL, json=body).status_code == 202


def _statuses(app):
    with app.app_context():
        rows = db.session.execute(db.select(Appeal.email, Appeal.status)).all()
        db.session.remove()
        return dict(rows)


def _is_digest(received) -> bool:  # noqa: ANN001 - as _to below
    """A digest carries its CSV: the only multipart/mixed message the campaign sends."""
    return bool(received.message.get_content_type() == "multipart/mixed")


def _to(smtp, address):
    return [m for m in smtp.received if m.rcpt_tos == [address]]


def _csv(message):
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/csv"]
    raw = part.get_payload(decode=True)
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with a BOM
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def test_a_digest_carries_every_supporter_once_per_target(app, client, smtp, work):
    _mode(app)
    _embassy(app)
    _submit(client, 2, "GB")
    _submit(client, 1, "FR", start=2)
    with app.app_context():  # what no form lets through, straight into the rows
        db.session.execute(
            update(Appeal).where(Appeal.email == "s0@example.org").values(name=HOSTILE_NAME)
        )
        db.session.execute(
            update(Appeal)
            .where(Appeal.email == "s1@example.org")
            .values(name=RTL_NAME, message=LONG_SENTENCE)
        )
        db.session.commit()
    work()  # the dispatcher's pass: no per-supporter mail, and no digest due yet
    assert smtp.received == []
    assert set(_statuses(app).values()) == {Status.QUEUED}

    result = app.test_cli_runner().invoke(args=["appeals", "digest", "--now"])
    assert result.exit_code == 0, result.output
    assert "3 appeals" in result.output

    [minister] = _to(smtp, MINISTER)
    [embassy] = _to(smtp, EMBASSY)
    assert len(smtp.received) == 2
    message = minister.message
    assert message["To"].addresses[0].addr_spec == MINISTER
    assert "Bcc" not in message and "victim@example.org" not in str(message["To"])
    # The digest speaks its target's language: the campaign's copy language (es).
    assert "(3 simpatizantes)" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Eve Bcc: victim@example.org <b>bold</b>" in text  # one line, CR/LF gone
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert "\u202e" not in text and "\u202e" not in html  # no direction override
    assert "أحمد 🕊️ Ahmed" in text and "أحمد 🕊️ Ahmed" in html
    assert "x" * 10_240 in text
    assert "Supporter 2" in text and "Francia" in text  # the country, in Spanish
    # The letter once, in the targets' language, with nobody's signature.
    assert text.count("Sr. Ministro") == 1
    rows = _csv(message)
    assert [r["name"] for r in rows][0] == "Eve Bcc: victim@example.org <b>bold</b>"
    assert {r["country"] for r in rows} == {"Reino Unido", "Francia"}
    formula = next(r for r in rows if r["name"] == "أحمد 🕊️ Ahmed")
    assert formula["sentence"].startswith("'=HYPERLINK")  # never a formula
    assert all(r["confirmed_at"] for r in rows)
    # The embassy in London gets the supporters in the United Kingdom only.
    assert len(_csv(embassy.message)) == 2
    assert "Supporter 2" not in embassy.message.get_body(("plain",)).get_content()

    assert set(_statuses(app).values()) == {Status.SENT}
    with app.app_context():
        copies = db.session.scalars(db.select(Recipient)).all()
        assert len(copies) == 5  # 3 to the Minister, 2 to the embassy
        assert {c.status for c in copies} == {"accepted"}
        assert all(c.digest_id and c.message_id for c in copies)
        digests_sent = db.session.scalars(db.select(Digest)).all()
        assert sorted(d.supporters for d in digests_sent) == [2, 3]
        assert {d.status for d in digests_sent} == {"sent"}
    work()  # nothing more goes: every appeal is settled
    assert len(smtp.received) == 2


def test_a_digest_is_due_once_its_period_began(app, client, smtp, work):
    _mode(app, hours=24)
    _submit(client, 2)
    with app.app_context():
        assert digests.due_digests() == []  # confirmed after this period began
        tomorrow = utcnow() + timedelta(days=1)
        assert digests.due_digests(tomorrow) == [SLUG]
        [report] = digests.run_due(tomorrow)
        assert report.sent == 2
        assert digests.due_digests(tomorrow) == []  # it went for this period
        db.session.remove()
    assert len(_to(smtp, MINISTER)) == 1


def test_capped_mode_sends_the_cap_one_by_one_and_digests_the_rest(app, client, smtp, work):
    _mode(app, Mode.CAPPED, cap=2)
    _submit(client, 5)
    work()
    one_by_one = _to(smtp, MINISTER)
    assert len(one_by_one) == 2  # the day's cap
    assert not any(_is_digest(m) for m in one_by_one)
    assert sorted(_statuses(app).values()).count(Status.QUEUED) == 3
    work()  # the cap holds on the next pass too
    assert len(_to(smtp, MINISTER)) == 2
    with app.app_context():
        tomorrow = utcnow() + timedelta(days=1)
        [report] = digests.run_due(tomorrow)
        db.session.remove()
    assert report.claimed == 3 and report.sent == 3
    digest = _to(smtp, MINISTER)[-1].message
    assert "(3 simpatizantes)" in digest["Subject"]
    assert set(_statuses(app).values()) == {Status.SENT}


def test_a_digest_and_a_batch_racing_send_each_appeal_once(app, client, smtp, redis):
    """A batch job waiting in Redis from before the switch to digest mode, and a digest,
    at the same moment: the guarded claims let each appeal go once."""
    from campaign.delivery import jobs

    _mode(app, Mode.EACH)
    _submit(client, 20)
    with app.app_context():
        ids = list(db.session.scalars(db.select(Appeal.id).order_by(Appeal.id)))
    _mode(app, Mode.DIGEST)
    barrier = threading.Barrier(2)
    results = {}

    def batch():
        with app.app_context():
            barrier.wait()
            results["batch"] = jobs.deliver_appeals(ids)
            db.session.remove()

    def digest():
        with app.app_context():
            barrier.wait()
            results["digest"] = digests.send_digest(SLUG, scheduled=False)
            db.session.remove()

    threads = [threading.Thread(target=batch), threading.Thread(target=digest)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(_statuses(app).values()) == {Status.SENT}
    by_batch = results["batch"]["claimed"]
    by_digest = results["digest"].claimed
    assert by_batch + by_digest == 20
    with app.app_context():
        copies = db.session.scalars(db.select(Recipient).where(Recipient.address == MINISTER))
        per_appeal = [c.appeal_id for c in copies]
        db.session.remove()
    assert sorted(per_appeal) == ids  # one copy each, however it went
    singles = [m for m in _to(smtp, MINISTER) if not _is_digest(m)]
    assert len(singles) == by_batch


def test_relay_down_gives_the_appeals_back(app, client, smtp, work):
    _mode(app)
    _submit(client, 3)
    with app.app_context():
        from dataclasses import replace

        from campaign.settings import relay_settings

        down = replace(relay_settings(), port=1)  # nothing listens there
        report = digests.send_digest(SLUG, scheduled=False, relay=down)
        assert report.claimed == 3 and report.queued == 3 and report.failed == 1
        [failed] = db.session.scalars(db.select(Digest)).all()
        assert failed.status == "failed" and "relay unavailable" in failed.last_reply
        db.session.remove()
    assert set(_statuses(app).values()) == {Status.QUEUED}
    with app.app_context():
        assert db.session.scalars(db.select(Recipient)).all() == []
        report = digests.send_digest(SLUG, scheduled=False)  # the relay is back
        assert report.sent == 3
        db.session.remove()
    assert len(_to(smtp, MINISTER)) == 1
    assert set(_statuses(app).values()) == {Status.SENT}


def test_a_refused_digest_fails_its_appeals_visibly(app, client, smtp):
    _mode(app)
    _submit(client, 2)
    smtp.handler.rcpt_replies = {MINISTER: "550 5.1.1 no such mailbox"}
    with app.app_context():
        report = digests.send_digest(SLUG, scheduled=False)
        assert report.appeals_failed == 2
        [digest] = db.session.scalars(db.select(Digest)).all()
        assert digest.status == "failed" and "550" in digest.last_reply
        reasons = set(db.session.scalars(db.select(Appeal.status_reason)))
        db.session.remove()
    assert set(_statuses(app).values()) == {Status.FAILED}
    assert all("no such mailbox" in r for r in reasons)


def test_sending_pauses_and_test_mode_apply_to_digests(app, client, smtp):
    """README: a paused campaign gets no digest; in test mode each digest goes to the
    staff address alone, marked [TEST], and the target gets nothing."""
    _mode(app)
    _submit(client, 2)
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        option.sending_paused = True
        db.session.commit()
        report = digests.send_digest(SLUG, scheduled=False)
        db.session.remove()
    assert report.claimed == 0 and smtp.received == []
    assert set(_statuses(app).values()) == {Status.QUEUED}
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        option.sending_paused, option.test_address = False, "staff@amnesty.test"
        db.session.commit()
        report = digests.send_digest(SLUG, scheduled=False)
        db.session.remove()
    assert report.claimed == 2
    [received] = smtp.received
    assert received.rcpt_tos == ["staff@amnesty.test"]
    assert received.message["Subject"].startswith("[TEST] ")
    assert _is_digest(received) and len(_csv(received.message)) == 2
    assert _to(smtp, MINISTER) == []


def test_a_large_digest_is_split_into_parts(app, client, smtp):
    _mode(app)
    _submit(client, 5)
    app.config["DIGEST_MAX_SUPPORTERS"] = 2
    with app.app_context():
        report = digests.send_digest(SLUG, scheduled=False)
        db.session.remove()
    assert report.messages == 3 and report.sent == 5
    subjects = [m.message["Subject"] for m in _to(smtp, MINISTER)]
    assert all("5 simpatizantes" in s for s in subjects)
    assert any("parte 3 de 3" in s for s in subjects)
    assert sum(len(_csv(m.message)) for m in _to(smtp, MINISTER)) == 5


def test_csv_cells_never_start_a_formula():
    rows = [
        digest_message.Supporter(1, "=1+1", "GB", "+44", "-2", None),
        digest_message.Supporter(2, "@SUM(A1)", "GB", "UK", "\tx", None),
    ]
    parsed = list(csv.reader(io.StringIO(digest_message.csv_attachment(rows).decode("utf-8-sig"))))
    assert parsed[1][:3] == ["'=1+1", "'+44", "'-2"]
    assert parsed[2][0] == "'@SUM(A1)" and parsed[2][2] == "'\tx"


def test_status_page_and_receipt_name_the_digest(app, client, smtp, work):
    _mode(app, confirmation=True)
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    work()
    from helpers import confirmation_token

    token = confirmation_token(smtp.received[-1].message.get_body(("plain",)).get_content())
    assert client.post(f"/api/v1/confirm/{token}").status_code == 200
    with app.app_context():
        public_id = db.session.scalar(db.select(Appeal.public_id))
        db.session.remove()
    page = client.get(f"/appeal/{public_id}?lang=en").get_data(as_text=True)
    assert "will go in the next digest, on" in page
    with app.app_context():
        digests.send_digest(SLUG, scheduled=False)
        db.session.remove()
    page = client.get(f"/appeal/{public_id}?lang=en").get_data(as_text=True)
    assert "Your name went in the digest of" in page
    before = len(smtp.received)
    work()  # the dispatcher hands the receipt out
    [receipt] = [m for m in smtp.received[before:] if m.rcpt_tos == ["ana@example.org"]]
    body = receipt.message.get_body(("plain",)).get_content()
    assert "your name went in the digest of" in body.lower()


def test_admin_mode_form_rejects_bad_values(app, client):
    from test_admin import logged_in_as

    logged_in_as(app, client, "admin@example.org", "admin")
    page = f"/admin/campaigns/{SLUG}"

    def post(**values):
        token = csrf_token(client.get(page).get_data(as_text=True))
        data = {"csrf_token": token, "confirmation_required": "y", **values}
        return client.post(page, data=data)

    for bad in (
        {"delivery_mode": "digest", "digest_hours": "0"},
        {"delivery_mode": "digest", "digest_hours": "169"},
        {"delivery_mode": "digest", "digest_hours": "x"},
        {"delivery_mode": "capped", "digest_hours": "24", "daily_cap": ""},
        {"delivery_mode": "capped", "digest_hours": "24", "daily_cap": "0"},
        {"delivery_mode": "flood", "digest_hours": "24"},
    ):
        response = post(**bad)
        assert response.status_code == 422, bad
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        assert option is None or option.delivery_mode == Mode.EACH
        db.session.remove()
    response = post(delivery_mode="capped", digest_hours="12", daily_cap="100")
    assert response.status_code == 302
    with app.app_context():
        option = db.session.get(CampaignOption, SLUG)
        assert (option.delivery_mode, option.digest_hours, option.daily_cap) == ("capped", 12, 100)
        from campaign import audit

        assert any("delivery_mode=capped" in (e.detail or "") for e in audit.latest(10))
        db.session.remove()


@pytest.mark.parametrize("hours", [1, 24, 168])
def test_periods_are_aligned_in_the_targets_time_zone(app, hours):
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from campaign.campaigns import get_campaign

    with app.app_context():
        campaign = get_campaign(SLUG)
        now = datetime(2026, 5, 6, 12, 30, tzinfo=UTC)  # a Wednesday
        start, end = digests.period(campaign, hours, now)
    assert start <= now < end and end - start == timedelta(hours=hours)
    local = start.astimezone(ZoneInfo("Europe/Madrid"))
    assert local.minute == 0
    if hours == 24:
        assert local.hour == 8
    if hours == 168:
        assert local.weekday() == 0 and local.hour == 8


def test_console_eta_is_the_next_digest(app, client, smtp, work):
    from campaign.console import overview

    _mode(app)
    _submit(client, 3)
    work()
    with app.app_context():
        now = utcnow()
        [mine] = [c for c in overview(now).campaigns if c.slug == SLUG]
        expected = digests.next_digest_at(SLUG, None, now)
        db.session.remove()
    assert mine.eta.waiting == 3
    assert mine.eta.finishes_at == expected and expected > now
    assert "digest" in mine.eta.bottleneck
    _mode(app, Mode.CAPPED, cap=10)  # the cap leaves room: the pacing decides, not the digest
    with app.app_context():
        [mine] = [c for c in overview(now).campaigns if c.slug == SLUG]
        db.session.remove()
    assert "digest" not in mine.eta.bottleneck
