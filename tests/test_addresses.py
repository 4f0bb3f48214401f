"""Changing a target's address at run time (campaign.addresses): the letters, the re-route
of queued, held, bounced and refused copies through the real pipeline to an SMTP sink
on loopback, the events, and the admin page through its forms and CSRF."""

from __future__ import annotations

import re
from typing import Any

import pytest

from campaign import addresses, appeals, states
from campaign.bounces import hold_reason
from campaign.campaigns import get_campaign
from campaign.db import db, utcnow
from campaign.exceptions import InvalidInput
from campaign.letters import letter_for
from campaign.models import (
    AddressChange,
    Appeal,
    AppealEvent,
    AuditEvent,
    CampaignOption,
    Delivery,
    Diplomat,
    Recipient,
    Role,
    Status,
    TargetFlag,
)
from campaign.users import create_user
from helpers import APPEALS_URL, csrf_token, log_in, stored_appeal, supporter

SLUG = "pavlov-extradition"
MINISTER = "ministro@mju.es"  # the campaign file's main addressee
NEW = "nuevo@mju.example"
EMBASSY = "emb@maec.example"
ADMIN = "admin@example.org"
PASSWORD = "correct horse battery staple"
CHANGED = f"address changed: {MINISTER} → {NEW}, by {ADMIN}"


@pytest.fixture
def queued_at_once(app: Any) -> None:
    """No confirmation step, and an embassy in GB that gets a copy of every appeal."""
    with app.app_context():
        db.session.add(CampaignOption(slug=SLUG, confirmation_required=False))
        db.session.add(Diplomat(target_state="ES", country="GB", name="Embassy", email=EMBASSY))
        db.session.commit()


def send(client: Any, email: str) -> int:
    assert client.post(APPEALS_URL, json=supporter(email=email)).status_code == 202
    return appeal(client.application, email).id


appeal = stored_appeal


def copies(app: Any, appeal_id: int) -> dict[str, Recipient]:
    with app.app_context():
        rows = db.session.scalars(db.select(Recipient).filter_by(appeal_id=appeal_id)).all()
        db.session.expunge_all()
        return {r.address: r for r in rows}


def events(app: Any, appeal_id: int) -> list[tuple[str | None, str, str | None]]:
    with app.app_context():
        return [
            (e.from_status, e.to_status, e.reason)
            for e in db.session.scalars(
                db.select(AppealEvent).filter_by(appeal_id=appeal_id).order_by(AppealEvent.id)
            )
        ]


def move(app: Any, appeal_id: int, source: str, target: str, reason: str) -> None:
    with app.app_context():
        assert states.move([appeal_id], source, target, reason=reason)
        db.session.commit()


def change(app: Any, old: str = MINISTER, new: str = NEW, **options: Any) -> int:
    with app.app_context():
        return addresses.change(old, new, actor=ADMIN, **options)


def rcpts_after(smtp: Any, start: int) -> list[str]:
    return [a for mail in smtp.received[start:] for a in mail.rcpt_tos]


# --- the addresses in force ------------------------------------------------------------


def test_chains_resolve_to_their_end_and_a_change_back_undoes_one():
    assert addresses.resolve([("a@x", "b@x"), ("b@x", "c@x")]) == {"a@x": "c@x", "b@x": "c@x"}
    # The other order: a→b made after b→c still ends at c.
    assert addresses.resolve([("b@x", "c@x"), ("a@x", "b@x")]) == {"b@x": "c@x", "a@x": "c@x"}
    # Back again: b is good once more, and nothing loops.
    assert addresses.resolve([("a@x", "b@x"), ("b@x", "a@x")]) == {"b@x": "a@x"}
    assert addresses.resolve([("A@X", "b@x")]) == {"a@x": "b@x"}


def test_new_letters_and_the_preview_go_to_the_new_address(app, client):
    with app.app_context():
        campaign = get_campaign(SLUG)
        writer = Appeal(name="Ana", email="ana@example.org", language="en", country="GB")
        assert [r.email for r in letter_for(campaign, writer, "Org").to] == [MINISTER]
    assert change(app, reroute=False) == 0
    with app.app_context():
        assert [r.email for r in letter_for(campaign, writer, "Org").to] == [NEW]
        assert addresses.current(MINISTER, SLUG) == NEW
        assert addresses.current(MINISTER.upper()) == NEW
    form = {**supporter(language="en"), "preview": "Preview my appeal"}
    del form["consent"]
    form["csrf_token"] = csrf_token(client.get(f"/c/{SLUG}").get_data(as_text=True))
    page = client.post(f"/c/{SLUG}", data=form).get_data(as_text=True)
    assert f"&lt;{NEW}&gt;" in page  # the To: line above the letter
    assert re.search(rf'<dd class="email">{re.escape(NEW)}</dd>', page)  # its block
    assert MINISTER not in page
    # A chain: the new address changes again, for this campaign only.
    change(app, NEW, "third@mju.example", campaign=SLUG, reroute=False)
    with app.app_context():
        assert [r.email for r in letter_for(campaign, writer, "Org").to] == ["third@mju.example"]
        assert addresses.current(MINISTER, SLUG) == "third@mju.example"
        assert addresses.current(MINISTER) == NEW  # every campaign's map lacks the second
        rows = db.session.scalars(db.select(AddressChange).order_by(AddressChange.id)).all()
        assert [(r.old_address, r.new_address, r.campaign) for r in rows] == [
            (MINISTER, NEW, None),
            (NEW, "third@mju.example", SLUG),
        ]


def test_a_diplomats_address_changes_in_its_row(app, queued_at_once):
    change(app, EMBASSY.upper(), "Embajada@MAEC.example", reroute=False)
    with app.app_context():
        [diplomat] = db.session.scalars(db.select(Diplomat)).all()
        assert diplomat.email == "embajada@maec.example"  # normalised as supporters' are
        writer = Appeal(name="Ana", email="ana@example.org", language="en", country="GB")
        letter = letter_for(get_campaign(SLUG), writer, "Org")
        assert [r.email for r in letter.cc] == ["embajada@maec.example"]


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        (MINISTER, "nuevo@mju.example\r\nBcc: x@evil.test", "new", "one line"),
        (MINISTER, "a" * 250 + "@x.es", "new", "at most 254"),
        (MINISTER, "not an address", "new", "not an e-mail address"),
        (MINISTER, "Ministro@MJU.es", "new", "same as the old"),
        ("", NEW, "old", "Enter an e-mail address"),
        ("ministro\n@mju.es", NEW, "old", "one line"),
    ],
)
def test_bad_input_is_refused_with_its_reason(app, old, new, field, words):
    with app.app_context(), pytest.raises(InvalidInput) as refused:
        addresses.change(old, new, actor=ADMIN)
    assert words in refused.value.fields[field]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AddressChange)) == 0


# --- re-routing, through the real pipeline ------------------------------------------------


def test_queued_held_bounced_and_refused_mail_goes_to_the_new_address(
    app, client, smtp, work, queued_at_once
):
    handler = smtp.handler
    # Sent; then its main copy bounced (as the bounce reader records it).
    sent = send(client, "s0@example.org")
    work()
    with app.app_context():
        db.session.execute(
            db.update(Recipient)
            .where(Recipient.appeal_id == sent, Recipient.address == MINISTER)
            .values(status=Delivery.BOUNCED, bounced_at=utcnow(), last_reply="5.1.1 gone")
        )
        db.session.commit()
    # Refused for now: retrying, its main copy pending (the embassy's accepted). Two more
    # the same way, then held: by a manager, and for the flagged address.
    handler.rcpt_replies = {MINISTER: "451 4.3.0 Try again later"}
    retrying = send(client, "s3@example.org")
    manager_held = send(client, "s6@example.org")
    flag_held = send(client, "s7@example.org")
    work()
    assert appeal(app, "s3@example.org").status == Status.RETRYING
    move(app, manager_held, Status.RETRYING, Status.HELD, "hold by manager@example.org")
    hold = hold_reason(MINISTER)  # the bounce reader's hold for a flagged target
    move(app, flag_held, Status.RETRYING, Status.HELD, hold)
    # Failed: the main copy refused for good, the embassy's dropped with it.
    handler.rcpt_replies = {MINISTER: "550 5.1.1 No such user", EMBASSY: "451 4.3.0 Later"}
    failed = send(client, "s5@example.org")
    work()
    assert appeal(app, "s5@example.org").status == Status.FAILED
    assert copies(app, failed)[EMBASSY].last_reply == addresses.DROPPED
    # Never tried: held for the flagged address, held by a manager, and just queued.
    handler.rcpt_replies = {}
    with app.app_context():
        db.session.add(TargetFlag(address=MINISTER, reason=f"{MINISTER}: 550 5.1.1 gone"))
        db.session.commit()
    flag_held_unsent = send(client, "s4@example.org")
    move(app, flag_held_unsent, Status.QUEUED, Status.HELD, hold)
    manager_held_unsent = send(client, "s2@example.org")
    move(app, manager_held_unsent, Status.QUEUED, Status.HELD, "hold by manager@example.org")
    untried = send(client, "s1@example.org")

    with app.app_context():
        preview = addresses.plan(MINISTER, NEW)
        assert dict(preview.kinds) == {
            "bounced": 1,
            "queued": 1,
            "held": 2,
            "refused": 1,
            "unsent": 1,
        }
        assert preview.copies == 6
        counts = addresses.copy_counts()[MINISTER]
        assert counts == {"queued": 1, "held": 2, "bounced": 1, "refused": 1, "sending": 0}
    assert change(app) == 6

    status = {e: appeal(app, f"{e}@example.org").status for e in ("s0", "s1", "s2", "s3")}
    status |= {e: appeal(app, f"{e}@example.org").status for e in ("s4", "s5", "s6", "s7")}
    assert status == {
        "s0": Status.QUEUED,  # sent, with a bounced copy: goes again, to that copy
        "s1": Status.QUEUED,  # untouched: its letter is composed later
        "s2": Status.HELD,  # held by a manager, before its first try: untouched
        "s3": Status.QUEUED,  # retrying: due now, to the new address
        "s4": Status.QUEUED,  # held for the address: released
        "s5": Status.QUEUED,  # failed at the old address: goes again
        "s6": Status.HELD,  # held by a manager: stays held, its copy re-routed
        "s7": Status.QUEUED,  # held for the address: released
    }
    # Each affected appeal records the change; moved ones through the move's own event.
    for moved_id, source in (
        (sent, Status.SENT),
        (retrying, Status.RETRYING),
        (failed, Status.FAILED),
        (flag_held, Status.HELD),
        (flag_held_unsent, Status.HELD),
    ):
        assert events(app, moved_id)[-1] == (source, Status.QUEUED, CHANGED)
    assert events(app, manager_held)[-1] == (Status.HELD, Status.HELD, CHANGED)
    for untouched in (untried, manager_held_unsent):
        assert all("address changed" not in (e[2] or "") for e in events(app, untouched))
    bounced = copies(app, sent)
    assert MINISTER not in bounced
    assert bounced[NEW].status == Delivery.PENDING and bounced[NEW].attempts == 0
    assert bounced[NEW].role == "to" and bounced[EMBASSY].status == Delivery.ACCEPTED
    with app.app_context():
        flag = db.session.get(TargetFlag, MINISTER)
        assert (flag.decision, flag.decided_by) == (addresses.REROUTED, ADMIN)
        record = db.session.scalar(db.select(AddressChange))
        assert record.rerouted == 6 and record.changed_by == ADMIN
        audit = db.session.scalar(db.select(AuditEvent).filter_by(action="address changed"))
        assert audit.actor == ADMIN and "6 copies re-routed" in audit.detail

    before = len(smtp.received)
    work()
    assert MINISTER not in rcpts_after(smtp, before)
    for e in ("s0", "s1", "s3", "s4", "s5", "s7"):
        assert appeal(app, f"{e}@example.org").status == Status.SENT, e
    by_sender = {m.message["Reply-To"].addresses[0].addr_spec: m for m in smtp.received[before:]}
    # Accepted copies never go twice; a re-routed one goes alone, named in the To header.
    assert by_sender["s0@example.org"].rcpt_tos == [NEW]
    assert by_sender["s0@example.org"].message["To"].addresses[0].addr_spec == NEW
    assert by_sender["s3@example.org"].rcpt_tos == [NEW]
    # The failed appeal's dropped copy goes with its main copy; new letters to both.
    for e in ("s5", "s1", "s4"):
        assert sorted(by_sender[f"{e}@example.org"].rcpt_tos) == [EMBASSY, NEW], e
    # The re-sent message keeps its Message-ID: the same appeal, for its new addressee.
    assert (
        by_sender["s0@example.org"].message["Message-ID"] == smtp.received[0].message["Message-ID"]
    )

    # Released later, the manager's holds go to the new address too.
    with app.app_context():
        assert appeals.steer("release", by="manager@example.org") == 2
    before = len(smtp.received)
    work()
    assert sorted(rcpts_after(smtp, before)) == [EMBASSY, NEW, NEW]


def test_an_appeal_being_sent_is_left_alone(app, client, smtp, work, queued_at_once):
    smtp.handler.rcpt_replies = {MINISTER: "451 4.3.0 Try again later"}
    appeal_id = send(client, "s0@example.org")
    work()
    move(app, appeal_id, Status.RETRYING, Status.SENDING, None)
    before = events(app, appeal_id)
    with app.app_context():
        assert addresses.plan(MINISTER, NEW).sending == 1
    assert change(app) == 0
    assert appeal(app, "s0@example.org").status == Status.SENDING
    assert copies(app, appeal_id)[MINISTER].status == Delivery.PENDING
    assert events(app, appeal_id) == before
    with app.app_context():
        audit = db.session.scalar(db.select(AuditEvent).filter_by(action="address changed"))
        assert "1 left alone (being sent)" in audit.detail
    # Once it is back in the queue, the same change again re-routes what was left.
    move(app, appeal_id, Status.SENDING, Status.RETRYING, "451")
    assert change(app) == 1
    assert set(copies(app, appeal_id)) == {NEW, EMBASSY}


@pytest.mark.parametrize("role", ["cc", "to"])
def test_an_appeal_with_a_copy_for_the_new_address_gets_no_second_one(
    app, client, smtp, work, queued_at_once, role
):
    """The embassy's address changes to the minister's (or the other way round): the
    appeal has a copy for it already. The old copy goes (the unique index holds one
    copy per address, and no retry may revive it); the main addressee's role passes to
    the copy that stays."""
    smtp.handler.rcpt_replies = {
        MINISTER: "451 4.3.0 Try again later",
        EMBASSY: "451 4.3.0 Try again later",
    }
    appeal_id = send(client, "s0@example.org")
    work()
    old, new = (EMBASSY, MINISTER) if role == "cc" else (MINISTER, EMBASSY)
    assert change(app, old, new) == 0
    rows = copies(app, appeal_id)
    assert set(rows) == {new}
    assert rows[new].status == Delivery.PENDING and rows[new].role == "to"
    assert events(app, appeal_id)[-1][1:] == (
        Status.RETRYING,
        f"address changed: {old} → {new}, by {ADMIN}",
    )
    smtp.handler.rcpt_replies = {}
    with app.app_context():  # a manager's "retry now" gives every failed copy a new start
        assert appeals.steer("retry", by="manager@example.org", appeal_ids=[appeal_id]) == 1
    before = len(smtp.received)
    work()
    assert rcpts_after(smtp, before) == [new]
    assert appeal(app, "s0@example.org").status == Status.SENT


# --- the admin page ---------------------------------------------------------------------------


def _admin(app: Any, client: Any, role: str = Role.ADMIN) -> Any:
    with app.app_context():
        create_user(ADMIN if role == Role.ADMIN else "manager@example.org", role, PASSWORD)
    email = ADMIN if role == Role.ADMIN else "manager@example.org"
    assert log_in(client, email, PASSWORD).status_code == 302
    return client


def test_the_admin_page_reviews_then_changes_and_reroutes(app, client, smtp, work, queued_at_once):
    smtp.handler.rcpt_replies = {MINISTER: "451 4.3.0 Try again later"}
    appeal_id = send(client, "s0@example.org")
    work()
    _admin(app, client)
    page = client.get(f"/admin/addresses?old={MINISTER}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f'value="{MINISTER}"' in html  # the form filled in from ?old=
    row = re.search(rf'<tr data-address="{re.escape(MINISTER)}">(.*?)</tr>', html, re.S)
    assert row and "<td>1</td>" in row.group(1)  # one queued copy
    assert f'data-address="{EMBASSY}"' in html
    token = csrf_token(html)
    form = {"old": MINISTER, "new": NEW, "campaign": "", "reroute": "y"}

    # Without the CSRF token: refused, nothing changed.
    assert client.post("/admin/addresses", data={**form, "confirm": "1"}).status_code == 400
    assert copies(app, appeal_id)[MINISTER].status == Delivery.PENDING
    bad = client.post("/admin/addresses", data={**form, "new": "nope", "csrf_token": token})
    assert bad.status_code == 422
    assert "not an e-mail address" in bad.get_data(as_text=True)

    review = client.post("/admin/addresses", data={**form, "csrf_token": token, "review": "1"})
    text = review.get_data(as_text=True)
    assert review.status_code == 200
    assert re.search(r'id="confirm-what">1 copy will go to the new address', text)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AddressChange)) == 0
    assert copies(app, appeal_id)[MINISTER].status == Delivery.PENDING

    done = client.post(
        "/admin/addresses", data={**form, "csrf_token": csrf_token(text), "confirm": "1"}
    )
    assert done.status_code == 302 and done.headers["Location"].endswith("/admin/addresses")
    assert set(copies(app, appeal_id)) == {NEW, EMBASSY}
    listing = client.get("/admin/addresses").get_data(as_text=True)
    assert f"{MINISTER} is {NEW} from now on; 1 copy re-routed." in listing
    changes = re.search(r'<table id="changes">(.*?)</table>', listing, re.S)
    assert changes
    assert re.search(
        rf"<td>{MINISTER}</td><td>{NEW}</td>\s*<td>Every campaign</td><td>1</td><td>{ADMIN}</td>",
        changes.group(1),
    )
    assert f'<tr data-address="{MINISTER}"><td>{MINISTER}</td><td><strong>{NEW}</strong>' in listing
    smtp.handler.rcpt_replies = {}
    before = len(smtp.received)
    work()
    assert rcpts_after(smtp, before) == [NEW]


def test_managers_may_not_change_addresses(app, client):
    _admin(app, client, Role.MANAGER)
    assert client.get("/admin/addresses").status_code == 403
    html = client.get("/manage").get_data(as_text=True)
    token = csrf_token(html)
    reply = client.post(
        "/admin/addresses",
        data={"old": MINISTER, "new": NEW, "csrf_token": token, "confirm": "1"},
    )
    assert reply.status_code == 403
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(AddressChange)) == 0


def test_the_form_in_a_browser(app, client, smtp, work, queued_at_once):
    """Chromium: the Change link fills in the form, the review asks, the change is made."""
    import os
    import threading

    from werkzeug.serving import make_server

    from helpers import CHROMIUM, CHROMIUM_ARGS

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import expect, sync_playwright

    smtp.handler.rcpt_replies = {MINISTER: "451 4.3.0 Try again later"}
    appeal_id = send(client, "s0@example.org")
    work()
    with app.app_context():
        create_user(ADMIN, Role.ADMIN, PASSWORD)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            # Nothing but the app: any other request fails the test.
            page.route(re.compile(r"^(?!" + re.escape(base) + ")"), lambda route: route.abort())
            page.goto(f"{base}/login")
            page.fill("#email", ADMIN)
            page.fill("#password", PASSWORD)
            page.click("#submit")
            page.goto(f"{base}/admin/addresses")
            page.locator(f'tr[data-address="{MINISTER}"] a').click()
            expect(page.locator("#old")).to_have_value(MINISTER)
            expect(page.locator("#reroute")).to_be_checked()
            page.fill("#new", NEW)
            page.click("#review")
            expect(page.locator("#confirm-what")).to_contain_text("1 copy will go")
            page.click("#confirm")
            expect(page.locator(".flash.ok")).to_contain_text("1 copy re-routed")
            browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()
    assert set(copies(app, appeal_id)) == {NEW, EMBASSY}
