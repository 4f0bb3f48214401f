"""Campaign managers: the send queue at a glance, finding and steering appeals, the
export, and the local mail capture. The queries are :mod:`campaign.console`'s."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    get_template_attribute,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import text
from sqlalchemy.orm import selectinload
from werkzeug.routing import BuildError

from .. import appeals, audit, bounces, capture, console, search, sending
from ..campaigns import all_campaigns
from ..db import db, utcnow
from ..delivery.queue import wake_dispatcher
from ..forms import EraseForm, SteerForm
from ..letters import letter_for
from ..models import Appeal, Role, Status
from ..retention import erase_supporter
from ..settings import relay_settings
from ..users import role_required

bp = Blueprint("manage", __name__, url_prefix="/manage")

REFRESH_SECONDS = 5
"""How often an open overview asks for fresh figures."""

LATEST = 20
"""Appeals in the overview's "latest" list; the search finds the others."""

ATTENTION_SHOWN = 20
"""Failed, retrying and held appeals on the overview, latest first; the counts link to
all of them."""

ACTIONS: dict[str, tuple[str, str]] = {
    "hold": (
        "queued or waiting to retry",
        "They stay in the database and go nowhere until someone releases them.",
    ),
    "release": ("held", "They go back in the queue and leave at the pacing in force."),
    "retry": (
        "failed or waiting to retry",
        "They go back in the queue with a fresh count of tries. "
        "Copies the relay accepted already are not sent again.",
    ),
    "cancel": (
        "not sent yet (waiting for confirmation, queued, retrying or held)",
        "They will never be sent. This cannot be undone.",
    ),
}
"""For each action: the appeals it applies to, and what it does to them, in words."""


# --- Readable times ----------------------------------------------------------------------


@bp.app_template_filter("when")
def when(value: datetime | float | None) -> Markup:
    """A time people read: ``2026-11-30 21:34 UTC (in 5 min)``, in a ``<time>``."""
    if value is None or value == "":
        return Markup("")
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    iso = value.astimezone(UTC).isoformat(timespec="seconds")
    return Markup('<time datetime="%s">%s</time>') % (iso, console.readable(value, utcnow()))


def _gate() -> sending.Gate:
    """The pauses in force, read once per request."""
    if "console_gate" not in g:
        g.console_gate = sending.read()
    return g.console_gate


@bp.app_template_global("why_waiting")
def why_waiting(appeal: Appeal) -> tuple[str, datetime | None] | None:
    return console.waiting_reason(appeal, utcnow(), _gate())


# --- The overview ------------------------------------------------------------------------


ATTENTION = "status IN ('failed', 'retrying', 'held')"
"""As the partial index ``ix_appeals_attention`` is written, so the database uses it."""


def _attention() -> list[Appeal]:
    return list(
        db.session.scalars(
            db.select(Appeal)
            .options(selectinload(Appeal.recipients))
            .where(text(ATTENTION))
            .order_by(Appeal.updated_at.desc())
            .limit(ATTENTION_SHOWN)
        )
    )


def _latest() -> list[Appeal]:
    return list(
        db.session.scalars(
            db.select(Appeal)
            .options(selectinload(Appeal.recipients))
            .order_by(Appeal.id.desc())
            .limit(LATEST)
        )
    )


def _sections(view: console.Overview) -> dict[str, str]:
    """The parts of the overview that refresh by themselves, as HTML: the same macros
    build the page and its refreshes."""

    def macro(name: str) -> Any:
        return get_template_attribute("manage/_overview.html", name)

    g.console_gate = view.gate
    sections = {
        "live-counts": macro("counts_list")(view.counts),
        "live-sending": macro("sending_state")(view.gate),
        "live-engine": macro("engine_block")(view.engine, view.now),
        "live-attention": macro("attention")(_attention(), appeals.STEERING, view.now),
        "live-latest": macro("latest_table")(_latest(), appeals.STEERING),
    }
    for item in view.campaigns:
        sections[f"live-campaign-{item.slug}"] = macro("campaign_card")(item, view.now)
    return {k: str(v) for k, v in sections.items()}


@bp.get("")
@role_required(Role.MANAGER)
def dashboard() -> str:
    view = console.overview()
    g.console_gate = view.gate
    return render_template(
        "manage/dashboard.html",
        view=view,
        failures=_attention(),
        latest=_latest(),
        steer_form=SteerForm(),
        steering=appeals.STEERING,
        capture_on=_capture_dir() is not None,
        refresh_seconds=REFRESH_SECONDS,
    )


@bp.get("/live.json")
@role_required(Role.MANAGER)
def live() -> Response:
    """The overview's figures for the page's script, every few seconds."""
    _keep_idle_clock()
    view = console.overview()
    return jsonify(
        updated=f"{view.now:%H:%M:%S} UTC",
        everything_paused=view.gate.everything_paused,
        counts=view.counts,
        campaigns={
            c.slug: {
                "state": c.state,
                "sending_paused": c.sending_paused,
                "test_mode": c.test_address is not None,
                "counts": c.counts,
                "sent_last_hours": c.sent_in_window,
                "waiting": c.eta.waiting,
                "finishes_at": c.eta.finishes_at.isoformat() if c.eta.finishes_at else None,
                "late": c.eta.late,
            }
            for c in view.campaigns
        },
        sections=_sections(view),
    )


def _keep_idle_clock() -> None:
    """A refresh in the background is not the manager at work: the session's idle
    clock stays where their last request left it, so an overview left open on an
    unattended screen still signs out after ``SESSION_IDLE_MINUTES``."""
    before = current_app.session_interface.open_session(current_app, request)
    if before is not None and "seen_at" in before:
        session["seen_at"] = before["seen_at"]


# --- One appeal --------------------------------------------------------------------------


@bp.get("/appeals/<int:appeal_id>")
@role_required(Role.MANAGER)
def appeal(appeal_id: int) -> str:
    """One appeal: each recipient's copy, every move it made, and its letter."""
    found = db.session.get(Appeal, appeal_id)
    if found is None:
        abort(404, "No such appeal.")
    letter, letter_note = None, ""
    campaign = all_campaigns().get(found.campaign)
    if found.erased_at is not None:
        letter_note = "The letter is no longer kept: the supporter's data was erased."
    elif campaign is None:
        letter_note = f"The campaign {found.campaign!r} is no longer on file."
    else:
        # The letter is never stored: it is written again, as the worker writes it,
        # from what the appeal holds (the same words, the same variant).
        letter = letter_for(campaign, found, relay_settings().org_name)
        sent_to = {r.address.lower() for r in found.recipients}
        written_to = {r.email.lower() for r in (*letter.to, *letter.cc)}
        if sent_to and sent_to != written_to:
            letter_note = (
                "The diplomats on file have changed since this appeal was sent: "
                "the copy line below names today's."
            )
    return render_template(
        "manage/appeal.html",
        a=found,
        letter=letter,
        letter_note=letter_note,
        waiting=console.waiting_reason(found, utcnow(), _gate()),
        steer_form=SteerForm(),
        steering=appeals.STEERING,
    )


# --- Finding appeals ---------------------------------------------------------------------


def _filters() -> tuple[search.Filters, dict[str, str]]:
    try:
        return search.Filters.parse(request.args), {}
    except search.FilterError as e:
        return search.Filters(), e.errors


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() and len(value) < 12 else None


def _form_values() -> dict[str, str]:
    """What was typed in the filters, as typed, to show it again."""
    return {k: request.args.get(k, "") for k in search.FILTER_FIELDS}


def _choices() -> dict[str, Any]:
    campaigns = all_campaigns()
    languages = sorted({lang for c in campaigns.values() for lang in c.languages})
    return {
        "statuses": Status.ALL,
        "campaign_slugs": sorted(campaigns),
        "languages": [(code, console.language_name(code)) for code in languages],
        "date_fields": list(search.DATE_FIELDS),
    }


@bp.get("/appeals")
@role_required(Role.MANAGER)
def appeals_search() -> tuple[str, int]:
    """Find appeals by address, id, state, campaign, language, country, the domain their
    letter goes to and a date range; a page at a time; act on all that match."""
    filters, errors = _filters()
    page = None
    if not errors:
        page = search.search(filters, before=_int_arg("before"), after=_int_arg("after"))
    return render_template(
        "manage/appeals.html",
        typed=_form_values(),
        errors=errors,
        filters=filters,
        args=filters.args(),
        page=page,
        cap=search.COUNT_CAP,
        now=utcnow(),
        steering=appeals.STEERING,
        steer_form=SteerForm(),
        **_choices(),
    ), 422 if errors else 200


def _local(target: str | None, default: str) -> str:
    """``target`` if it is a page of this console, else ``default``: a form's "next"
    never sends anyone elsewhere."""
    if not target:
        return default
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not parts.path.startswith("/manage")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
        or len(target) > 2000
    ):
        return default
    return target


@bp.get("/appeals/bulk")
@role_required(Role.MANAGER)
def bulk_confirm() -> tuple[str, int]:
    """Before a bulk action: what it will do, to how many appeals. Nothing to do is
    said plainly, with no button."""
    action = request.args.get("action", "")
    if action not in appeals.STEERING:
        abort(400, "Choose hold, release, retry or cancel.")
    filters, errors = _filters()
    if errors:
        abort(400, "The filters are not valid any more: go back and search again.")
    sources = appeals.STEERING[action][0]
    return render_template(
        "manage/confirm.html",
        action=action,
        words=ACTIONS[action],
        applicable=search.applicable(filters, sources),
        matching=search.count(filters),
        described=filters.describe(),
        form_action=url_for("manage.bulk"),
        hidden={**filters.args(), "action": action},
        back=url_for("manage.appeals_search", **filters.args()),
        steer_form=SteerForm(),
    ), 200


@bp.post("/appeals/bulk")
@role_required(Role.MANAGER)
def bulk() -> Response:
    """Hold, release, retry or cancel every matching appeal that the action applies to;
    each goes through the one guarded move, so an appeal that moved on meanwhile (or
    is being sent) is left alone."""
    form = SteerForm()
    action = request.form.get("action", "")
    try:
        filters = search.Filters.parse(request.form)
    except search.FilterError:
        filters = None
    if not form.validate_on_submit() or action not in appeals.STEERING or filters is None:
        flash("That did not work: reload the page and try again.", "error")
        return redirect(url_for("manage.appeals_search"))
    moved = appeals.steer(action, by=current_user.email, where=filters.conditions())
    audit.record(action, f"{filters.describe()}: {moved} moved")
    db.session.commit()
    if moved:
        noun = "appeal" if moved == 1 else "appeals"
        flash(f"{action.capitalize()}: {moved} {noun}.", "ok")
    else:
        flash(f"Nothing to {action}: no matching appeal is {ACTIONS[action][0]}.", "error")
    return redirect(url_for("manage.appeals_search", **filters.args()))


# --- Steering one appeal, or every appeal ------------------------------------------------


@bp.get("/steer/confirm")
@role_required(Role.MANAGER)
def steer_confirm() -> tuple[str, int]:
    """Before cancelling an appeal, or acting on every appeal: what it will do."""
    action = request.args.get("action", "")
    raw = request.args.get("appeal_id", "")
    if action not in appeals.STEERING or not (raw == "all" or raw.isdigit()):
        abort(400, "Choose an action and an appeal.")
    sources = appeals.STEERING[action][0]
    filters = search.Filters() if raw == "all" else search.Filters(appeal_id=int(raw))
    back = _local(request.args.get("next"), url_for("manage.dashboard"))
    return render_template(
        "manage/confirm.html",
        action=action,
        words=ACTIONS[action],
        applicable=search.applicable(filters, sources),
        matching=search.count(filters),
        described="all appeals" if raw == "all" else f"appeal #{raw}",
        form_action=url_for("manage.steer"),
        hidden={"appeal_id": raw, "action": action, "next": back},
        back=back,
        steer_form=SteerForm(),
    ), 200


@bp.post("/steer")
@role_required(Role.MANAGER)
def steer() -> Response:
    form = SteerForm()
    action = request.form.get("action", "")
    back = _local(request.form.get("next"), url_for("manage.dashboard"))
    if not form.validate_on_submit() or action not in appeals.STEERING:
        flash("That did not work: reload the page and try again.", "error")
        return redirect(back)
    raw = request.form.get("appeal_id", "")
    ids = None if raw == "all" else [int(raw)] if raw.isdigit() and len(raw) < 12 else []
    moved = appeals.steer(action, by=current_user.email, appeal_ids=ids)
    audit.record(action, f"{'all' if ids is None else raw}: {moved} moved")
    db.session.commit()
    noun = "appeal" if moved == 1 else "appeals"
    if moved:
        flash(f"{action.capitalize()}: {moved} {noun}.", "ok")
    elif ids is None:
        flash(f"Nothing to {action}: no appeal is {ACTIONS[action][0]}.", "error")
    else:
        flash(f"Nothing to {action}: the appeal has moved on since the page was loaded.", "error")
    return redirect(back)


# --- The export --------------------------------------------------------------------------


def _cell(value: object) -> object:
    """A cell that a spreadsheet reads as text, never as a formula (CSV injection)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds")
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _csv(rows: Iterator[Sequence[Any]]) -> Iterator[str]:
    """CSV text, a few hundred rows per piece."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for n, row in enumerate(rows, 1):
        writer.writerow([_cell(v) for v in row])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@bp.get("/export.csv")
@role_required(Role.MANAGER)
def export() -> Response:
    """The matching appeals, one line each, streamed as they are read. No letters;
    names, addresses and the relay's words only when the manager ticks "personal
    data". Every export is in the audit log, with its filters."""
    filters, errors = _filters()
    if errors:
        abort(400, "The filters are not valid: go back and search again.")
    personal = request.args.get("personal") in ("1", "y", "on")
    matching = search.count(filters)
    audit.record(
        "export",
        f"{matching} appeals ({filters.describe()})"
        + ("; with names and e-mail addresses" if personal else "; no personal data"),
    )
    db.session.commit()
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(_csv(search.export_rows(filters, personal))),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="appeals-{stamp}.csv"'},
    )


# --- Erasure -----------------------------------------------------------------------------


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


# --- The local mail capture --------------------------------------------------------------


def _capture_dir() -> str | None:
    return current_app.config["MAIL_CAPTURE_DIR"] if current_app.config["MAIL_CAPTURE"] else None


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


def search_url(**args: str) -> str:
    """A link to the search with these filters (for templates)."""
    query = urlencode({k: v for k, v in args.items() if v})
    return url_for("manage.appeals_search") + (f"?{query}" if query else "")


bp.add_app_template_global(search_url, "search_url")


# --- Bounces -----------------------------------------------------------------------------


def _reroute_url(address: str) -> str:
    """The admin page that gives a target a new address (:mod:`campaign.addresses`)."""
    try:
        return url_for("admin.addresses", old=address)
    except BuildError:
        return "/admin/addresses?" + urlencode({"old": address})


@bp.get("/bounces")
@role_required(Role.MANAGER)
def bounce_list() -> str:
    """Each target address's hard and soft bounces; a flagged one's mail is held until a
    manager releases it or gives the target a new address."""
    return render_template(
        "manage/bounces.html",
        targets=bounces.targets(),
        reroute_url=_reroute_url,
        confirm=None,
        bounce_address=current_app.config.get("BOUNCE_ADDRESS"),
    )


@bp.get("/bounces/release")
@role_required(Role.MANAGER)
def bounce_release_confirm() -> tuple[str, int]:
    """Before releasing a flagged address: how many held appeals will go to it."""
    address = request.args.get("address", "").strip().lower()
    target = next((t for t in bounces.targets() if t.address == address), None)
    if target is None or target.flag is None:
        abort(404, "That address is not flagged.")
    return render_template(
        "manage/bounces.html",
        targets=[],
        reroute_url=_reroute_url,
        confirm=target,
        bounce_address=current_app.config.get("BOUNCE_ADDRESS"),
    ), 200


@bp.post("/bounces/release")
@role_required(Role.MANAGER)
def bounce_release() -> Response:
    """Release a flagged address: its held appeals go back to the queue."""
    form = SteerForm()
    address = request.form.get("address", "").strip().lower()
    if not form.validate_on_submit() or not address:
        flash("That did not work: reload the page and try again.", "error")
        return redirect(url_for("manage.bounce_list"))
    try:
        moved = bounces.decide(address, bounces.RELEASED, actor=current_user.email)
    except LookupError:
        abort(404, "That address is not flagged.")
    audit.record("release address", f"{address}: {moved} held appeals queued again")
    db.session.commit()
    if moved:
        wake_dispatcher()
    noun = "appeal" if moved == 1 else "appeals"
    flash(f"Released {address}: {moved} held {noun} back in the queue.", "ok")
    return redirect(url_for("manage.bounce_list"))
