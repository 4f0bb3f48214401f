"""Campaign managers: the send queue at a glance, and the local mail capture."""

from __future__ import annotations

import csv
import io

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy.orm import selectinload

from .. import appeals, audit, capture
from ..appeals import counts_by_status
from ..db import db
from ..forms import EraseForm, SteerForm
from ..models import Appeal, Role, Status
from ..retention import erase_supporter
from ..users import role_required

bp = Blueprint("manage", __name__, url_prefix="/manage")


@bp.get("")
@role_required(Role.MANAGER)
def dashboard() -> str:
    with_copies = selectinload(Appeal.recipients)
    latest = db.session.scalars(
        db.select(Appeal).options(with_copies).order_by(Appeal.id.desc()).limit(50)
    ).all()
    failures = db.session.scalars(
        db.select(Appeal)
        .options(with_copies)
        .where(Appeal.status.in_((Status.FAILED, Status.RETRYING, Status.HELD)))
        .order_by(Appeal.updated_at.desc())
        .limit(50)
    ).all()
    return render_template(
        "manage/dashboard.html",
        steer_form=SteerForm(),
        steering=appeals.STEERING,
        counts=counts_by_status(),
        latest=latest,
        failures=failures,
        capture_on=_capture_dir() is not None,
    )


@bp.get("/appeals/<int:appeal_id>")
@role_required(Role.MANAGER)
def appeal(appeal_id: int) -> str:
    """One appeal: each recipient's copy, and every move it made."""
    found = db.session.get(Appeal, appeal_id)
    if found is None:
        abort(404, "No such appeal.")
    return render_template(
        "manage/appeal.html", a=found, steer_form=SteerForm(), steering=appeals.STEERING
    )


def _capture_dir() -> str | None:
    return current_app.config["MAIL_CAPTURE_DIR"] if current_app.config["MAIL_CAPTURE"] else None


@bp.post("/steer")
@role_required(Role.MANAGER)
def steer() -> Response:
    form = SteerForm()
    action = request.form.get("action", "")
    if not form.validate_on_submit() or action not in appeals.STEERING:
        flash("That did not work: reload the page and try again.", "error")
        return redirect(url_for("manage.dashboard"))
    raw = request.form.get("appeal_id", "")
    ids = None if raw == "all" else [int(raw)] if raw.isdigit() else []
    moved = appeals.steer(action, by=current_user.email, appeal_ids=ids)
    audit.record(action, f"{'all' if ids is None else raw}: {moved} moved")
    db.session.commit()
    noun = "appeal" if moved == 1 else "appeals"
    flash(
        f"{action.capitalize()}: {moved} {noun}."
        if moved
        else f"Nothing to {action}: the appeal has moved on since the page was loaded.",
        "ok" if moved else "error",
    )
    return redirect(url_for("manage.dashboard"))


@bp.get("/export.csv")
@role_required(Role.MANAGER)
def export() -> Response:
    """Every appeal, one line each, for the campaign office's own records: this carries
    supporters' names and addresses, so every export is in the audit log."""
    columns = ("id", "campaign", "status", "name", "email", "language", "country")
    times = ("created_at", "confirmed_at", "sent_at", "erased_at")
    rows = db.session.execute(
        db.select(*(getattr(Appeal, c) for c in columns + times)).order_by(Appeal.id)
    ).all()
    audit.record("export", f"{len(rows)} appeals")
    db.session.commit()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns + times)
    for row in rows:
        writer.writerow(
            [_cell(v) for v in row[: len(columns)]]
            + [v.isoformat() if v else "" for v in row[len(columns) :]]
        )
    return Response(
        out.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="appeals.csv"'},
    )


def _cell(value: object) -> object:
    """A cell that a spreadsheet reads as text, never as a formula (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@bp.route("/erase", methods=["GET", "POST"])
@role_required(Role.MANAGER)
def erase() -> str | Response | tuple[str, int]:
    """Remove one supporter's personal data, on their request."""
    form = EraseForm()
    if form.validate_on_submit():
        count = erase_supporter(form.email.data or "", by=current_user.email)
        flash(
            f"Erased the personal data of {count} appeal(s) from that address."
            if count
            else "No appeal with personal data has that address (or it is being sent "
            "right now: try again in a minute).",
            "ok" if count else "error",
        )
        return redirect(url_for("manage.erase"))
    return render_template("manage/erase.html", form=form), 422 if form.is_submitted() else 200


@bp.get("/mail")
@role_required(Role.MANAGER)
def mail() -> str:
    directory = _capture_dir()
    if directory is None:
        return render_template("manage/mail.html", messages=[], total=0, capture_on=False)
    return render_template(
        "manage/mail.html",
        messages=capture.latest(directory, 100),
        total=capture.count(directory),
        capture_on=True,
    )


@bp.get("/mail/<key>")
@role_required(Role.MANAGER)
def mail_message(key: str) -> str:
    directory = _capture_dir()
    item = capture.get(directory, key) if directory else None
    if item is None:
        abort(404, "No such captured message.")
    return render_template("manage/mail_message.html", item=item)


@bp.get("/mail/<key>/raw")
@role_required(Role.MANAGER)
def mail_raw(key: str) -> Response:
    directory = _capture_dir()
    item = capture.get(directory, key) if directory else None
    if item is None:
        abort(404, "No such captured message.")
    return Response(item.message.as_bytes(), mimetype="text/plain")
