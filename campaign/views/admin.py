"""Admins: the SMTP relay, a test message, diplomatic representatives, campaign
switches and staff accounts."""

from __future__ import annotations

from typing import Any

from email_validator import EmailNotValidError
from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from .. import mime, settings
from ..campaigns import all_campaigns
from ..db import db
from ..delivery.jobs import connection
from ..delivery.transport import SessionLost
from ..exceptions import InvalidInput
from ..forms import (
    CampaignOptionsForm,
    DeleteForm,
    DiplomatForm,
    PacingForm,
    RelayForm,
    TestMailForm,
    UserForm,
)
from ..intake import countries, country_name, normalise_email
from ..mail import Outgoing, sender_domain
from ..models import CampaignOption, Diplomat, Role, User
from ..users import create_user, role_required

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
    rules = settings.pacing_rules()
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
    settings.save(changes, by=current_user.email)
    names = ", ".join(sorted(changes)) or "nothing changed"
    flash(f"Relay settings saved ({names}). Workers use them from their next message.", "ok")
    return redirect(url_for("admin.relay"))


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
    settings.save(
        {
            "pacing_per_domain_per_hour": float(form.pacing_per_domain_per_hour.data),
            "pacing_per_address_per_hour": float(form.pacing_per_address_per_hour.data),
            "pacing_business_hours_only": bool(form.pacing_business_hours_only.data),
        },
        by=current_user.email,
    )
    flash("Pacing saved. Workers use it from their next batch.", "ok")
    return redirect(url_for("admin.relay"))


@bp.post("/test-message")
@role_required(Role.ADMIN)
def test_message() -> Response:
    form = TestMailForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for("admin.relay"))
    relay = settings.relay_settings()
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
    outgoing = Outgoing(relay.sender, [current_user.email], data, "")
    with connection(relay) as conn:
        result = conn.send(outgoing)
    if isinstance(result, SessionLost):
        flash(f"The relay did not accept the test message: {result.reason}", "error")
    elif not result.accepted:
        flash(f"The relay did not accept the test message: {result.final}", "error")
    else:
        flash(f"Test message accepted by {relay.host}:{relay.port} for {current_user.email}.", "ok")
    return redirect(url_for("admin.relay"))


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
        db.session.commit()
        flash("Campaign switches saved.", "ok")
        return redirect(url_for("admin.campaign_options", slug=slug))
    return render_template("admin/campaign.html", campaign=campaign, form=form)


@bp.route("/users", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def users() -> str | tuple[str, int]:
    form = UserForm()
    created: tuple[str, str] | None = None
    code = 200
    if form.validate_on_submit():
        try:
            user, password = create_user(form.email.data or "", form.role.data)
        except InvalidInput as e:
            for key, message in e.fields.items():
                getattr(form, key).errors = [message]
            code = 422
        else:
            # Shown once, on this page only; never logged or stored in the clear.
            created = (user.email, password)
    elif form.is_submitted():
        code = 422
    rows = db.session.scalars(db.select(User).order_by(User.email)).all()
    return render_template("admin/users.html", form=form, rows=rows, created=created), code
