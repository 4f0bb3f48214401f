"""The whole path on real parts: API → DB → RQ on Redis → SMTP server on loopback."""

from __future__ import annotations

from email.utils import getaddresses, parsedate_to_datetime

from campaign.campaigns import get_campaign
from campaign.db import db
from campaign.models import Appeal, AppealEvent, Diplomat, Status
from helpers import APPEALS_URL, confirmation_token, supporter


def _confirmation_body(smtp) -> str:
    assert len(smtp.received) == 1
    return smtp.received[0].message.get_body(("plain",)).get_content()


def test_submit_confirm_deliver_with_every_header(app, client, smtp, work):
    with app.app_context():
        db.session.add(
            Diplomat(
                target_state="ES",
                country="GB",
                name="Embassy of Spain in London",
                email="emb.londres@maec.test",
            )
        )
        db.session.commit()

    reply = client.post(APPEALS_URL, json=supporter(name='Ana "Ñ" García, Jr.'))
    assert reply.status_code == 202, reply.json
    assert reply.json["status"] == Status.AWAITING_CONFIRMATION

    work()  # sends the confirmation only
    assert len(smtp.received) == 1
    confirmation = smtp.received[0]
    assert confirmation.rcpt_tos == ["ana@example.org"]
    token = confirmation_token(_confirmation_body(smtp))

    reply = client.post(f"/api/v1/confirm/{token}")
    assert reply.status_code == 200
    assert reply.json["status"] == Status.QUEUED
    status_url = reply.json["status_url"].removeprefix("http://appeals.test")
    assert client.get(status_url).json["status"] == Status.QUEUED
    # A second use of the link does nothing.
    assert client.post(f"/api/v1/confirm/{token}").status_code == 404

    work()
    assert client.get(status_url).json["status"] == Status.SENT
    assert len(smtp.received) == 2
    appeal_mail = smtp.received[1]
    msg = appeal_mail.message

    # Envelope: the org's address sends; the minister and every copy with e-mail receive.
    assert appeal_mail.mail_from == "appeals@amnesty.test"
    assert sorted(appeal_mail.rcpt_tos) == ["emb.londres@maec.test", "ministro@mju.es"]
    # Headers, as a real relay receives them.
    [(from_name, from_addr)] = getaddresses([str(msg["From"])])
    assert from_addr == "appeals@amnesty.test"
    # (CPython's address parser keeps the space between encoded words: normalise it.
    # test_mime.py checks the exact RFC 2047 decoding.)
    assert " ".join(from_name.split()) == 'Ana "Ñ" García, Jr. via Amnesty Test Section'
    assert msg["Reply-To"].addresses[0].addr_spec == "ana@example.org"
    assert msg["Reply-To"].addresses[0].display_name == 'Ana "Ñ" García, Jr.'
    assert [a.addr_spec for a in msg["To"].addresses] == ["ministro@mju.es"]
    assert [a.addr_spec for a in msg["Cc"].addresses] == ["emb.londres@maec.test"]
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@amnesty.test>")
    assert parsedate_to_datetime(msg["Date"]).tzinfo is not None
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Sr. Ministro" in text
    assert "garantías diplomáticas" in text and "garantías diplomáticas" in html
    assert "Por favor, actúe ya." in text
    assert "Reino Unido" in text  # the supporter's country, in the letter's language
    assert "Sr. D. Javier Zaragoza Aguado" in text  # copy line names the prosecutor
    assert "Embassy of Spain in London" in text
    assert "Ana &#34;Ñ&#34; García, Jr." in html  # autoescaped (MarkupSafe's form of ")
    # Every raw line within SMTP's limit.
    assert max(len(line) for line in appeal_mail.data.split(b"\r\n")) <= 998

    with app.app_context():
        appeal = db.session.scalar(db.select(Appeal))
        assert appeal.message_id == msg["Message-ID"]
        moves = [
            (e.from_status, e.to_status)
            for e in db.session.scalars(db.select(AppealEvent).order_by(AppealEvent.id))
        ]
    assert (Status.AWAITING_CONFIRMATION, Status.QUEUED) in moves
    assert moves[-1] == (Status.SENDING, Status.SENT)


def test_english_letter_carries_both_requests(app, client, smtp, work):
    from campaign.models import CampaignOption

    with app.app_context():
        db.session.add(CampaignOption(slug="pavlov-extradition", confirmation_required=False))
        db.session.commit()
    reply = client.post(APPEALS_URL, json=supporter(language="en", message=None))
    assert reply.status_code == 202
    assert reply.json["status"] == Status.QUEUED  # admin switched confirmation off
    work()
    [mail] = smtp.received
    text = mail.message.get_body(("plain",)).get_content()
    assert text.startswith("Dear Minister,")
    with app.app_context():
        wording = get_campaign("pavlov-extradition").wordings["en"]
    # Paragraphs 4 to 6, in one of their phrasings each: no extradition, not even with
    # diplomatic assurances, and how Spain keeps its obligation not to return anyone.
    for request in wording.paragraphs[3:]:
        assert sum(p.text in text for p in request) == 1
    assert "diplomatic assurances" in text.lower()
    assert "real risk of torture or other ill-treatment" in text
    assert "Copies to: Sr. D. Javier Zaragoza Aguado, Chief Prosecutor" in text
    assert mail.rcpt_tos == ["ministro@mju.es"]  # the prosecutor has no e-mail
    assert "Cc" not in mail.message


def test_nothing_is_sent_before_confirmation(app, client, smtp, work):
    client.post(APPEALS_URL, json=supporter())
    work()
    work()
    assert [m.rcpt_tos for m in smtp.received] == [["ana@example.org"]]
