"""Admins: the SMTP relay, a test message, diplomatic representatives, campaign
switches and staff accounts."""

from __future__ import annotations

import smtplib
from dataclasses import replace
from typing import Any

from email_validator import EmailNotValidError
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from .. import audit, mime, settings
from ..campaigns import all_campaigns
from ..db import db
from ..delivery.jobs import connection
from ..delivery.pacing import pacing_rules
from ..delivery.transport import SessionLost
from ..exceptions import InvalidInput
from ..forms import (
    CampaignOptionsForm,
    DeleteForm,
    DiplomatForm,
    PacingForm,
    RelayForm,
    TestMailForm,
    UserActionForm,
    UserForm,
)
from ..intake import countries, country_name, normalise_email
from ..mail import Outgoing, sender_domain
from ..models import CampaignOption, Diplomat, Role, User
from ..users import (
    create_user,
    end_sessions,
    new_password,
    role_required,
    set_password,
    start_session,
)

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _relay_page(form: RelayForm | None = None, code: int = 200) -> tuple[str, int]:
    relay = settings.relay_settings()
    if form is None:
        form = RelayForm(
            data={
                "relay_host": relay.host,
                "relay_port": relay.port,
                "relay_security": relay.security,
                "relay_username": relay.username,
                "relay_sender": relay.sender,
                "org_name": relay.org_name,
            }
        )
    rules = pacing_rules()
    pacing_form = PacingForm(
        data={
            "pacing_per_domain_per_hour": rules.per_domain_per_hour,
            "pacing_per_address_per_hour": rules.per_address_per_hour,
            "pacing_business_hours_only": rules.business_hours_only,
        }
    )
    return render_template(
        "admin/relay.html",
        form=form,
        relay=relay,
        pacing=rules,
        pacing_form=pacing_form,
        password_set=bool(relay.password),
        test_form=TestMailForm(),
        campaigns=all_campaigns().values(),
    ), code


@bp.get("")
@role_required(Role.ADMIN)
def relay() -> tuple[str, int]:
    return _relay_page()


def _changed_values(form: RelayForm, relay: settings.RelaySettings) -> dict[str, Any]:
    """Only what the admin changed is saved; the rest keeps following the environment."""
    current = {
        "relay_host": relay.host,
        "relay_port": relay.port,
        "relay_security": relay.security,
        "relay_username": relay.username or "",
        "relay_sender": relay.sender,
        "org_name": relay.org_name,
    }
    changes: dict[str, Any] = {}
    for key, old in current.items():
        new = getattr(form, key).data
        if isinstance(new, str):
            new = new.strip()
        if new not in (None, "") and new != old:
            changes[key] = new
    if form.relay_password.data:
        changes["relay_password"] = form.relay_password.data
    return changes


@bp.post("")
@role_required(Role.ADMIN)
def relay_save() -> Response | tuple[str, int]:
    form = RelayForm()
    if not form.validate_on_submit():
        return _relay_page(form, 422)
    if form.revert.data:
        settings.save(dict.fromkeys(settings.RELAY_KEYS), by=current_user.email)
        audit.record("relay settings", "saved settings forgotten")
        db.session.commit()
        flash("Saved settings forgotten: the environment's values apply again.", "ok")
        return redirect(url_for("admin.relay"))
    changes = _changed_values(form, settings.relay_settings())
    errors = {}
    for key in ("relay_host", "relay_username", "relay_sender", "org_name"):
        value = changes.get(key)
        if isinstance(value, str) and any(c in value for c in "\r\n\0"):
            errors[key] = "Must be a single line."
    if "relay_sender" in changes and "relay_sender" not in errors:
        try:
            changes["relay_sender"] = normalise_email(changes["relay_sender"], False)
        except EmailNotValidError as e:
            errors["relay_sender"] = str(e)
    if errors:
        for key, message in errors.items():
            getattr(form, key).errors = [message]
        return _relay_page(form, 422)
    moved = {"relay_host", "relay_port", "relay_username"} & set(changes)
    if moved and "relay_password" not in changes and relay_has_password():
        # The stored password belongs to the old relay: it never goes to the new one.
        changes["relay_password"] = None
        flash("The relay changed, so its password was forgotten: enter it again.", "error")
    settings.save(changes, by=current_user.email)
    names = ", ".join(sorted(k for k in changes if k != "relay_password"))
    if "relay_password" in changes:
        names += (", " if names else "") + (
            "password" if changes["relay_password"] else "password forgotten"
        )
    audit.record("relay settings", names or "nothing changed")
    db.session.commit()
    flash(
        f"Relay settings saved ({names or 'nothing changed'}). "
        "Workers use them from their next message.",
        "ok",
    )
    return redirect(url_for("admin.relay"))


def relay_has_password() -> bool:
    return "relay_password" in settings.stored()


@bp.post("/pacing")
@role_required(Role.ADMIN)
def pacing_save() -> Response | tuple[str, int]:
    form = PacingForm()
    if not form.validate_on_submit():
        flash(
            "Pacing not saved: "
            + "; ".join(
                f"{getattr(form, k).label.text}: {' '.join(v)}" for k, v in form.errors.items()
            ),
            "error",
        )
        return redirect(url_for("admin.relay"))
    values = {
        "pacing_per_domain_per_hour": float(form.pacing_per_domain_per_hour.data),
        "pacing_per_address_per_hour": float(form.pacing_per_address_per_hour.data),
        "pacing_business_hours_only": bool(form.pacing_business_hours_only.data),
    }
    settings.save(values, by=current_user.email)
    audit.record("pacing", ", ".join(f"{k}={v}" for k, v in values.items()))
    db.session.commit()
    flash("Pacing saved. Workers use it from their next batch.", "ok")
    return redirect(url_for("admin.relay"))


def _checkable(relay: settings.RelaySettings) -> bool:
    """The relay checks reach only the usual submission ports (and the local capture):
    an admin screen must not become a port scanner of the server's network."""
    return relay.capture or relay.port in current_app.config["RELAY_CHECK_PORTS"]


_RELAY_FAILED = (
    "The relay could not be reached, or refused the connection, the encryption or the "
    "log-in. Check the host, port, security and password."
)


def _relay_check(send_test: bool) -> Response:
    form = TestMailForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for("admin.relay"))
    relay = settings.relay_settings()
    what = "test message" if send_test else "connection check"
    if not _checkable(relay):
        ports = ", ".join(str(p) for p in current_app.config["RELAY_CHECK_PORTS"])
        flash(f"Checks reach only ports {ports} (RELAY_EXTRA_PORTS adds more).", "error")
        return redirect(url_for("admin.relay"))
    # A short timeout: a web worker never waits the full MAIL_TIMEOUT for a silent host.
    quick = replace(relay, timeout=float(current_app.config["RELAY_CHECK_TIMEOUT"]))
    with connection(quick) as conn:
        if send_test:
            result = conn.send(_test_message(relay))
            ok = not isinstance(result, SessionLost) and bool(result.accepted)
            detail = result.reason if isinstance(result, SessionLost) else str(result.final)
        else:
            try:
                conn.open()
                ok, detail = True, "connected"
            except (smtplib.SMTPException, OSError) as e:
                ok, detail = False, SessionLost.of(e, quick.timeout).reason
    audit.record(what, f"{relay.host}:{relay.port} {'ok' if ok else 'failed'}")
    db.session.commit()
    if ok:
        done = "accepted a test message for" if send_test else "accepted a connection from"
        flash(f"The relay {relay.host}:{relay.port} {done} {current_user.email}.", "ok")
    else:
        # The same words whatever went wrong, so that they tell nothing about hosts and
        # ports beyond the relay; the details go to the server's log for the admin.
        current_app.logger.warning("relay %s failed: %s", what, detail)
        flash(_RELAY_FAILED, "error")
    return redirect(url_for("admin.relay"))


def _test_message(relay: settings.RelaySettings) -> Outgoing:
    # Only ever to the admin's own address: a test must never reach a target.
    data = mime.build(
        sender=(relay.org_name, relay.sender),
        reply_to=None,
        to=[("", current_user.email)],
        cc=[],
        subject="Appeal sender: relay test message",
        text=f"This is a test message from the appeal sender.\n\nRelay: {relay.host}:"
        f"{relay.port} ({relay.security}).\nIf you can read this, the relay works.\n",
        html=None,
        message_id=mime.make_message_id(sender_domain(relay)),
    )
    return Outgoing(relay.sender, [current_user.email], data, "")


@bp.post("/test-message")
@role_required(Role.ADMIN)
def test_message() -> Response:
    return _relay_check(send_test=True)


@bp.post("/check-connection")
@role_required(Role.ADMIN)
def check_connection() -> Response:
    return _relay_check(send_test=False)


@bp.route("/diplomats", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def diplomats() -> str | Response | tuple[str, int]:
    states = sorted({c.diplomats_of for c in all_campaigns().values() if c.diplomats_of})
    form = DiplomatForm()
    form.country.choices = dict(countries())
    code = 200
    if form.validate_on_submit():
        email = (form.email.data or "").strip() or None
        try:
            if email:
                email = normalise_email(email, False)
            for state in states:
                db.session.add(
                    Diplomat(
                        target_state=state,
                        country=form.country.data,
                        name=form.name.data.strip(),
                        email=email,
                        fax=(form.fax.data or "").strip() or None,
                        postal_address=form.postal_address.data or None,
                    )
                )
            audit.record("diplomat added", f"{form.name.data} ({form.country.data})")
            db.session.commit()
        except EmailNotValidError as e:
            form.email.errors = [str(e)]
            code = 422
        except IntegrityError:
            db.session.rollback()
            form.name.errors = ["This representative is listed already for this country."]
            code = 422
        else:
            flash(f"Added {form.name.data} for {country_name(form.country.data)}.", "ok")
            return redirect(url_for("admin.diplomats"))
    elif form.is_submitted():
        code = 422
    rows = db.session.scalars(db.select(Diplomat).order_by(Diplomat.country, Diplomat.name)).all()
    return render_template(
        "admin/diplomats.html",
        form=form,
        rows=rows,
        states=states,
        delete_form=DeleteForm(),
        country_name=country_name,
    ), code


@bp.post("/diplomats/<int:diplomat_id>/delete")
@role_required(Role.ADMIN)
def diplomat_delete(diplomat_id: int) -> Response:
    if DeleteForm().validate_on_submit():
        row = db.session.get(Diplomat, diplomat_id)
        if row is not None:
            audit.record("diplomat deleted", f"{row.name} ({row.country})")
            db.session.delete(row)
            db.session.commit()
    return redirect(url_for("admin.diplomats"))


@bp.route("/campaigns/<slug>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def campaign_options(slug: str) -> str | Response:
    campaign = all_campaigns().get(slug)
    if campaign is None:
        return redirect(url_for("admin.relay"))
    option = db.session.get(CampaignOption, slug) or CampaignOption(
        slug=slug, confirmation_required=True, paused=False
    )
    form = CampaignOptionsForm(obj=option)
    if form.validate_on_submit():
        option.confirmation_required = bool(form.confirmation_required.data)
        option.paused = bool(form.paused.data)
        db.session.merge(option)
        audit.record(
            "campaign switches",
            f"{slug}: confirmation_required={option.confirmation_required}, paused={option.paused}",
        )
        db.session.commit()
        flash("Campaign switches saved.", "ok")
        return redirect(url_for("admin.campaign_options", slug=slug))
    return render_template("admin/campaign.html", campaign=campaign, form=form)


@bp.route("/users", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def users() -> str | tuple[str, int]:
    form = UserForm()
    shown: tuple[str, str] | None = None
    code = 200
    if form.validate_on_submit():
        try:
            # Chosen here, so it must be replaced at the new user's first sign-in.
            user, password = create_user(form.email.data or "", form.role.data, must_change=True)
        except InvalidInput as e:
            for key, message in e.fields.items():
                getattr(form, key).errors = [message]
            code = 422
        else:
            audit.record("user created", f"{user.email} ({user.role})")
            db.session.commit()
            # Shown once, on this page only; never logged or stored in the clear.
            shown = (user.email, password)
    elif form.is_submitted():
        code = 422
    return _users_page(form, shown), code


def _users_page(form: UserForm | None = None, shown: tuple[str, str] | None = None) -> str:
    rows = db.session.scalars(db.select(User).order_by(User.email)).all()
    return render_template(
        "admin/users.html",
        form=form or UserForm(formdata=None),
        rows=rows,
        shown=shown,
        action_form=UserActionForm(),
    )


@bp.post("/users/<int:user_id>")
@role_required(Role.ADMIN)
def user_action(user_id: int) -> str | Response | tuple[str, int]:
    """Disable, enable or reset the password of a staff account. Disabling and a reset
    end every session of that user at once."""
    action = request.form.get("action", "")
    user = db.session.get(User, user_id)
    if not UserActionForm().validate_on_submit() or user is None:
        flash("That did not work: reload the page and try again.", "error")
        return redirect(url_for("admin.users"))
    if action == "disable":
        if user.id == current_user.id:
            flash("You cannot disable your own account.", "error")
            return redirect(url_for("admin.users"))
        user.active = False
        end_sessions(user)
    elif action == "enable":
        user.active = True
    elif action == "reset":
        password = new_password()
        set_password(user, password, must_change=True)
        audit.record("password reset", user.email)
        db.session.commit()
        if user.id == current_user.id:
            start_session(user)
        return _users_page(shown=(user.email, password))
    else:
        abort(400, "Unknown action.")
    audit.record(f"user {action}d", user.email)
    db.session.commit()
    flash(f"{user.email}: {action}d.", "ok")
    return redirect(url_for("admin.users"))


@bp.get("/audit")
@role_required(Role.ADMIN)
def audit_log() -> str:
    return render_template("admin/audit.html", rows=audit.latest(500))
