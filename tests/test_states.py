"""One table of moves, one guarded function that makes them, and a database that holds
only known states. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from campaign import states
from campaign.db import db, utcnow
from campaign.delivery import journal
from campaign.delivery.dispatcher import Dispatcher
from campaign.delivery.journal import Journal
from campaign.delivery.recipients import Outcome, Result, record
from campaign.delivery.runner import Batch
from campaign.models import Appeal, AppealEvent
from campaign.models import Status as S
from campaign.synthetic import create_synthetic
from campaign.tokens import confirmation_token
from helpers import APPEALS_URL, supporter


def _ids(app, n: int) -> list[int]:
    with app.app_context():
        create_synthetic("pavlov-extradition", n)
        return list(db.session.scalars(db.select(Appeal.id).order_by(Appeal.id)))


def _set(app, ids: list[int], **values) -> None:
    with app.app_context():
        db.session.execute(db.update(Appeal).where(Appeal.id.in_(ids)).values(**values))
        db.session.commit()


def _events(app, appeal_ids: list[int]) -> list[tuple[int, str | None, str]]:
    with app.app_context():
        rows = db.session.execute(
            db.select(AppealEvent.appeal_id, AppealEvent.from_status, AppealEvent.to_status)
            .where(AppealEvent.appeal_id.in_(appeal_ids))
            .order_by(AppealEvent.id)
        ).all()
        return [tuple(r) for r in rows]


def test_the_table_knows_every_state_and_final_states_go_nowhere():
    assert set(states.TRANSITIONS) == set(S.ALL)
    assert all(targets <= set(S.ALL) for targets in states.TRANSITIONS.values())
    # Only a re-route after a bounce sends a sent appeal again (campaign.addresses).
    assert states.TRANSITIONS[S.SENT] == {S.QUEUED}
    assert states.TRANSITIONS[S.CANCELLED] == frozenset()
    # What is being sent can only be settled by its batch or recovered: never steered.
    assert states.TRANSITIONS[S.SENDING] == {S.SENT, S.RETRYING, S.FAILED, S.QUEUED}


def test_an_illegal_move_is_refused_and_writes_nothing(app):
    [appeal_id] = _ids(app, 1)
    with app.app_context():
        with pytest.raises(states.IllegalMove):
            states.move([appeal_id], S.QUEUED, S.SENT, reason="skipping the relay")
        db.session.commit()
        assert db.session.get(Appeal, appeal_id).status == S.QUEUED
    assert _events(app, [appeal_id])[-1] == (appeal_id, S.AWAITING_CONFIRMATION, S.QUEUED)


def test_the_database_holds_only_known_states(app):
    [appeal_id] = _ids(app, 1)
    with app.app_context():
        with pytest.raises(IntegrityError):
            db.session.execute(
                text("UPDATE appeals SET status = 'delivered-ish' WHERE id = :i"), {"i": appeal_id}
            )
        db.session.rollback()
        for column, value in (("status", "maybe"), ("role", "me")):
            with pytest.raises(IntegrityError):
                db.session.execute(
                    text(
                        "INSERT INTO appeal_recipients (appeal_id, address, name, role, status, "
                        "attempts) VALUES (:i, 'x@example.org', '', :role, :status, 0)"
                    ),
                    {"i": appeal_id, "role": "to", "status": "pending", column: value},
                )
            db.session.rollback()


def test_a_move_records_events_for_exactly_the_rows_it_moved(app):
    ids = _ids(app, 3)
    _set(app, ids[2:], status=S.SENDING)  # this one is being sent
    before = len(_events(app, ids))
    with app.app_context():
        moved = states.move(ids, (S.QUEUED, S.RETRYING), S.HELD, reason="hold by test")
        db.session.commit()
    assert sorted(r[0] for r in moved) == ids[:2]
    new = _events(app, ids)[before:]
    assert new == [(ids[0], S.QUEUED, S.HELD), (ids[1], S.QUEUED, S.HELD)]


def test_a_guard_keeps_a_row_that_someone_else_holds(app):
    ids = _ids(app, 2)
    _set(app, ids[:1], status=S.SENDING, job_id="job-a")
    _set(app, ids[1:], status=S.SENDING, job_id="job-b")
    with app.app_context():
        moved = states.move(ids, S.SENDING, S.SENT, match={"job_id": "job-a"})
        fresh = states.move(
            ids, S.SENDING, S.QUEUED, older={"updated_at": utcnow() - timedelta(hours=1)}
        )
        db.session.commit()
        assert [r[0] for r in moved] == ids[:1]
        assert fresh == []  # both wrote a moment ago: neither heartbeat has stopped
        statuses = [db.session.get(Appeal, i).status for i in ids]
    assert statuses == [S.SENT, S.SENDING]


def test_the_database_records_every_move_whoever_makes_it(app):
    """The events come from a trigger: even a raw UPDATE cannot move an appeal unseen,
    and an update that moves nothing records nothing."""
    [appeal_id] = _ids(app, 1)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE appeals SET status = 'held', status_reason = 'by hand', "
                "updated_at = :now WHERE id = :i"
            ),
            {"i": appeal_id, "now": utcnow()},
        )
        db.session.execute(text("UPDATE appeals SET attempts = 3 WHERE id = :i"), {"i": appeal_id})
        db.session.commit()
        last = db.session.scalars(
            db.select(AppealEvent)
            .where(AppealEvent.appeal_id == appeal_id)
            .order_by(AppealEvent.id)
        ).all()[-1]
        assert (last.from_status, last.to_status, last.reason) == (S.QUEUED, S.HELD, "by hand")
    assert len(_events(app, [appeal_id])) == 3  # born, queued, held: the attempts change is no move


def test_the_database_records_the_birth_of_every_appeal_whoever_inserts_it(app):
    """The first event comes from a trigger too (migration 0010): a raw INSERT is born
    with exactly one event, from nothing to its first state, at its creation time."""
    born = utcnow() - timedelta(minutes=5)
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO appeals (public_id, campaign, name, email, language, country, "
                "status, status_reason, attempts, created_at, updated_at) VALUES ('p-1', "
                "'pavlov-extradition', 'Ana', 'ana@example.org', 'es', 'GB', "
                "'awaiting_confirmation', 'by hand', 0, :at, :at)"
            ),
            {"at": born},
        )
        db.session.commit()
        appeal_id = db.session.scalar(db.select(Appeal.id).filter_by(public_id="p-1"))
        [event] = db.session.scalars(
            db.select(AppealEvent).where(AppealEvent.appeal_id == appeal_id)
        ).all()
        assert (event.from_status, event.to_status, event.reason) == (
            None,
            S.AWAITING_CONFIRMATION,
            "by hand",
        )
        assert abs((event.at - born).total_seconds()) < 1


def test_a_submission_is_born_with_one_event_and_a_known_address_writes_none(app, client):
    """The API's INSERT is one statement in a transaction of its own: the appeal and its
    first event, and nothing at all for an address that appealed already."""
    assert client.post(APPEALS_URL, json=supporter()).status_code == 202
    with app.app_context():
        appeal_id = db.session.scalar(db.select(Appeal.id))
    assert _events(app, [appeal_id]) == [(appeal_id, None, S.AWAITING_CONFIRMATION)]
    assert client.post(APPEALS_URL, json=supporter(name="Ana again")).status_code == 202
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Appeal)) == 1
        assert db.session.scalar(db.select(Appeal.name)) == "Ana García"
        reasons = db.session.scalars(
            db.select(AppealEvent.reason).where(AppealEvent.appeal_id == appeal_id)
        ).all()
    # A resubmission is noted (the link goes again), not a second birth.
    assert reasons == [None, "submitted again: link sent again"]


def test_a_submission_and_an_api_confirm_are_one_statement_each_in_autocommit(
    app, client, smtp, work
):
    """The README's promise: a new appeal and a confirmation through the API are each one
    statement on the appeals, in a transaction of its own (an autocommit connection:
    on PostgreSQL one round trip, no BEGIN or COMMIT around it)."""
    seen: list[tuple[str, str | None]] = []

    def statement(conn, cursor, sql, parameters, context, executemany):  # noqa: ANN001
        if re.search(r"\b(INTO|UPDATE|FROM) appeals\b", sql):
            seen.append((sql.split()[0], conn.get_execution_options().get("isolation_level")))

    assert client.post(APPEALS_URL, json=supporter(email="warm@example.org")).status_code == 202
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", statement)
    try:
        assert client.post(APPEALS_URL, json=supporter()).status_code == 202
        assert seen == [("INSERT", "AUTOCOMMIT")]
        seen.clear()
        event.remove(engine, "before_cursor_execute", statement)
        work()  # the confirmation mail: its token is the appeal's
        event.listen(engine, "before_cursor_execute", statement)
        with app.app_context():
            appeal = db.session.scalar(db.select(Appeal).filter_by(email="ana@example.org"))
            token = confirmation_token(appeal)
        seen.clear()
        assert client.post(f"/api/v1/confirm/{token}").status_code == 200
        assert seen == [("UPDATE", "AUTOCOMMIT")]
    finally:
        if event.contains(engine, "before_cursor_execute", statement):
            event.remove(engine, "before_cursor_execute", statement)


def test_synthetic_appeals_are_born_and_move_with_events(app):
    [appeal_id] = _ids(app, 1)
    assert _events(app, [appeal_id]) == [
        (appeal_id, None, S.AWAITING_CONFIRMATION),
        (appeal_id, S.AWAITING_CONFIRMATION, S.QUEUED),
    ]


def test_handing_appeals_to_jobs_writes_nothing_to_them(app, redis):
    _ids(app, 3)
    with app.app_context():
        before = db.session.execute(db.select(Appeal.job_id, Appeal.updated_at)).all()
        report = Dispatcher().sweep()
        assert report.enqueued == 3
        db.session.expire_all()
        assert db.session.execute(db.select(Appeal.job_id, Appeal.updated_at)).all() == before


def test_a_batch_records_only_what_it_holds_and_clears_only_those_notes(app, redis):
    """The race that sent an appeal twice: someone else takes a row over between a
    batch's claim and its write. The batch must not record it, and must leave its
    acceptance note for whoever holds the row now."""
    ids = _ids(app, 2)
    with app.app_context():
        batch = Batch("job-a", Journal(redis))
        attempts = batch.claim(ids)
        assert [a.appeal.id for a in attempts] == ids
        # A second job for the same appeals (a second dispatcher, a restart) claims nothing.
        assert Batch("job-b", Journal(redis)).claim(ids) == []
        # The relay accepts both; then the second appeal is taken over by job-c.
        for attempt in attempts:
            batch.journal.note(attempt.appeal.id, "[]")
            batch.journaled.append(attempt.appeal.id)
            batch.results.append(Result(attempt.appeal.id, Outcome(S.SENT)))
        db.session.execute(db.update(Appeal).where(Appeal.id == ids[1]).values(job_id="job-c"))
        db.session.commit()
        batch.flush()
        batch.journal.close()
        assert [db.session.get(Appeal, i).status for i in ids] == [S.SENT, S.SENDING]
    assert journal.accepted(redis, ids) == {ids[1]: b"[]"}
    moves = [e for e in _events(app, ids) if e[1] == S.SENDING]
    assert moves == [(ids[0], S.SENDING, S.SENT)]


def test_recording_an_outcome_needs_the_row_to_still_be_sending(app):
    [appeal_id] = _ids(app, 1)
    _set(app, [appeal_id], status=S.HELD)
    with app.app_context():
        assert record([Result(appeal_id, Outcome(S.SENT))], match={"job_id": None}) == []
        db.session.commit()
        assert db.session.get(Appeal, appeal_id).status == S.HELD
