"""Admins: the SMTP relay and its check, a test message, pacing, diplomatic
representatives (:mod:`.diplomats`), campaign switches, sending pauses and test mode,
staff accounts, and rq-dashboard.

A manager who opens an admin page gets a page saying it is for admins (403). Pausing
and resuming sending (``POST /admin/sending``) is open to managers as well: it is
steering, like holding an appeal, and loses nothing.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import replace
from decimal import Decimal
from typing import Any

from email_validator import EmailNotValidError
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import generate_csrf
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import Forbidden
from werkzeug.wrappers import Response
from wtforms import (
    BooleanField,
    DecimalField,
    IntegerField,
    SelectField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, NumberRange, Optional
from wtforms.widgets import TextInput

from .. import audit, dkim, forms, mime, sending, settings, standing
from ..campaigns import all_campaigns
from ..db import db
from ..delivery import probe
from ..delivery.jobs import connection
from ..delivery.pacing import pacing_rules
from ..delivery.queue import rq
from ..delivery.transport import SessionLost
from ..exceptions import InvalidInput
from ..forms import (
    CampaignOptionsForm,
    RelayForm,
    TestMailForm,
    UserActionForm,
    UserForm,
)
from ..intake import normalise_email
from ..mail import Outgoing, sender_domain
from ..models import CampaignOption, Mode, Role, User
from ..users import (
    create_user,
    end_sessions,
    login_manager,
    new_password,
    role_required,
    set_password,
    start_session,
)

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.errorhandler(Forbidden)
def forbidden(e: Forbidden | None = None) -> tuple[str, int]:
    """Our own page for a manager on an admin page: what it is for, and who to ask."""
    return render_template("admin/forbidden.html"), 403


# --- pacing --------------------------------------------------------------------------------

RATE_RULE = _l("Enter a number from 0.1 to 1000000, with a dot for decimals (such as 0.5).")


class RateField(DecimalField):
    """Appeals per hour, as people type them ("0.1", "120"); shown back as typed."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError as e:
            raise ValueError(str(RATE_RULE)) from e
        if self.data is not None and not self.data.is_finite():
            self.data = None
            raise ValueError(str(RATE_RULE))

    def post_validate(self, form: Any, validation_stopped: bool) -> None:
        self.errors = list(dict.fromkeys(self.errors))  # the one rule, said once


def _rate(label: Any) -> RateField:
    # Decimal bounds: a float 0.1 is a hair above Decimal("0.1"), which refused 0.1.
    rule = NumberRange(Decimal("0.1"), Decimal(1_000_000), message=RATE_RULE)
    return RateField(
        label,
        validators=[InputRequired(message=RATE_RULE), rule],
        places=None,
        # Text, not type=number: a browser empties a number field it cannot read, and
        # the value must come back as it was typed, with what is wrong with it.
        widget=TextInput(),
        render_kw={"inputmode": "decimal", "autocomplete": "off"},
    )


class PacingForm(forms.PacingForm):
    pacing_per_domain_per_hour = _rate(
        _l("Appeals per hour to one receiving domain (everyone at mju.es shares one)")
    )
    pacing_per_address_per_hour = _rate(_l("Appeals per hour to one address"))


def _relay_page(
    form: RelayForm | None = None, code: int = 200, pacing_form: PacingForm | None = None
) -> tuple[str, int]:
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
    if pacing_form is None:
        pacing_form = PacingForm(
            formdata=None,
            data={
                # As typed, without a trailing ".0": 120, 0.5.
                "pacing_per_domain_per_hour": _plain(rules.per_domain_per_hour),
                "pacing_per_address_per_hour": _plain(rules.per_address_per_hour),
                "pacing_business_hours_only": rules.business_hours_only,
            },
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
        relay_check=session.pop("relay_check", None),
    ), code


def _plain(rate: float) -> Decimal:
    return Decimal(repr(rate)).normalize() if rate != int(rate) else Decimal(int(rate))


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
        # The page again, with the values as they were typed and what is wrong with each.
        flash(_("Pacing not saved: please check the values below."), "error")
        return _relay_page(code=422, pacing_form=form)
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
            # Step by step, sending nothing; shown once, on the relay page.
            report = probe.check(conn)
            ok, detail = report.ok, report.log_detail or "connected"
            session["relay_check"] = {
                "relay": f"{relay.host}:{relay.port} ({relay.security})",
                "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "steps": report.as_data(),
            }
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
    # Signed as every mail is, so that the admin's mailbox shows whether DKIM passes.
    return Outgoing(relay.sender, [current_user.email], dkim.sign(data), "")


@bp.post("/test-message")
@role_required(Role.ADMIN)
def test_message() -> Response:
    return _relay_check(send_test=True)


@bp.post("/check-connection")
@role_required(Role.ADMIN)
def check_connection() -> Response:
    return _relay_check(send_test=False)


HOURS_RULE = "Enter a whole number of hours from 1 to 168."


class CampaignSwitchesForm(CampaignOptionsForm):
    """The campaign's switches, and whether and until when it takes appeals."""

    closed = BooleanField("Closed: take no appeals any more, and send none not yet confirmed")
    close_at_deadline = BooleanField("Close at the deadline (otherwise appeals are taken after it)")
    section_contacts = TextAreaField(
        "Section office contacts, one a line: '*: …' for everyone, 'GB: …' for one country",
        validators=[Length(max=100_000)],
        render_kw={"rows": 5},
    )
    # How appeals reach the targets (campaign/digests.py).
    delivery_mode = SelectField(
        "Delivery to the targets",
        choices={
            Mode.EACH: "One e-mail per supporter",
            Mode.DIGEST: "A digest: one message per target every few hours",
            Mode.CAPPED: "One e-mail per supporter up to a daily cap, a digest for the rest",
        },
        default=Mode.EACH,
    )
    digest_hours = IntegerField(
        "Hours between two digests (1 to 168; 24 is daily, 168 weekly)",
        default=24,
        # Optional: a form from before these fields existed keeps the stored value.
        validators=[Optional(), NumberRange(1, 168, message=HOURS_RULE)],
    )
    daily_cap = IntegerField(
        "Daily cap: e-mails per supporter a day before the digest takes over (capped mode)",
        validators=[Optional(), NumberRange(min=1, message="The daily cap is at least 1.")],
    )

    def validate(self, extra_validators: Any = None) -> bool:
        valid = super().validate(extra_validators)
        if self.digest_hours.data is None and not self.digest_hours.errors:
            self.digest_hours.errors = [HOURS_RULE]  # sent empty
            valid = False
        if self.delivery_mode.data == Mode.CAPPED and not self.daily_cap.data:
            if not self.daily_cap.errors:
                self.daily_cap.errors = ["Capped mode needs a daily cap of at least 1."]
            valid = False
        return valid


_SWITCHES = ("confirmation_required", "paused", "closed", "close_at_deadline")
_DELIVERY = ("delivery_mode", "digest_hours", "daily_cap")


@bp.get("/doctor")
@role_required(Role.ADMIN)
def doctor() -> str:
    """The preflight, as ``flask doctor`` prints it (campaign/doctor.py)."""
    from ..doctor import run_checks

    checks = run_checks()
    return render_template("admin/doctor.html", checks=checks, failed=sum(c.failed for c in checks))


@bp.route("/campaigns/<slug>", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def campaign_options(slug: str) -> str | Response | tuple[str, int]:
    campaign = all_campaigns().get(slug)
    if campaign is None:
        return redirect(url_for("admin.relay"))
    option = db.session.get(CampaignOption, slug) or CampaignOption(
        slug=slug, confirmation_required=True, paused=False, closed=False, close_at_deadline=False
    )
    form = CampaignSwitchesForm(
        data={
            **{name: getattr(option, name) for name in _SWITCHES},
            "delivery_mode": option.delivery_mode or Mode.EACH,
            "digest_hours": option.digest_hours or 24,
            "daily_cap": option.daily_cap,
            "section_contacts": standing.format_contacts(option.section_contacts),
        }
    )
    if form.validate_on_submit():
        try:
            contacts = standing.parse_contacts(form.section_contacts.data or "")
        except InvalidInput as e:
            form.section_contacts.errors = [e.fields["section_contacts"]]
        else:
            for name in _SWITCHES:
                setattr(option, name, bool(getattr(form, name).data))
            for name in _DELIVERY:
                setattr(option, name, getattr(form, name).data)
            changed = sorted(
                code
                for code in {*contacts, *(option.section_contacts or {})}
                if contacts.get(code) != (option.section_contacts or {}).get(code)
            )
            option.section_contacts = contacts or None
            db.session.merge(option)
            switches = ", ".join(
                f"{name}={getattr(option, name)}" for name in (*_SWITCHES, *_DELIVERY)
            )
            offices = f", section offices changed: {' '.join(changed)}" if changed else ""
            audit.record("campaign switches", f"{slug}: {switches}{offices}")
            db.session.commit()
            flash("Campaign switches saved.", "ok")
            return redirect(url_for("admin.campaign_options", slug=slug))
    code = 422 if form.errors or form.section_contacts.errors else 200
    state = standing.state_of(campaign, option)
    return render_template("admin/campaign.html", campaign=campaign, form=form, state=state), code


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


# --- campaigns: their switches, sending pauses and test mode -------------------------------


class SendingForm(FlaskForm):
    """CSRF only: the campaign ("" for every campaign) and the action come as values."""


class TestModeForm(FlaskForm):
    test_address = SelectField(_l("Send every appeal to"), choices=[], validate_choice=False)
    test_on = SubmitField(_l("Switch test mode on"))
    test_off = SubmitField(_l("Go live: switch test mode off"))


def _default_option(slug: str) -> CampaignOption:
    return CampaignOption(
        slug=slug, confirmation_required=True, paused=False, closed=False, close_at_deadline=False
    )


@bp.get("/campaigns")
@role_required(Role.ADMIN)
def campaigns() -> str:
    """Every campaign: whether it takes appeals, whether it sends, live or in test mode."""
    options = {o.slug: o for o in db.session.scalars(db.select(CampaignOption))}
    gate = sending.read()
    rows = [
        {
            "campaign": campaign,
            "state": standing.state_of(campaign, options.get(slug) or _default_option(slug)),
            "paused": gate.holds(slug),
            "test_address": gate.test_address(slug),
        }
        for slug, campaign in sorted(all_campaigns().items())
    ]
    return render_template("admin/campaigns.html", rows=rows, gate=gate)


_BACK = re.compile(r"^/(?:manage|admin)(?:/[A-Za-z0-9_\-]+)*$")
"""Pages a pause or resume may go back to: our own, by path."""


def _back() -> str:
    back = request.form.get("back", "")
    if _BACK.match(back):
        return back
    return url_for("admin.campaigns" if current_user.is_admin else "manage.dashboard")


@bp.post("/sending")
@role_required(Role.MANAGER)
def sending_switch() -> Response:
    """Pause or resume sending, of one campaign or of every campaign."""
    if not SendingForm().validate_on_submit():
        flash(_("That did not work: reload the page and try again."), "error")
        return redirect(_back())
    action = request.form.get("action")
    slug = request.form.get("campaign") or None
    if action not in ("pause", "resume"):
        abort(400)
    if slug is not None and slug not in all_campaigns():
        abort(404)
    paused = action == "pause"
    if not sending.set_paused(slug, paused, current_user.email):
        flash(_("Nothing changed: it was so already."), "ok")
    elif slug is None:
        flash(
            _(
                "Sending is paused for every campaign. Confirmed appeals wait in the queue; "
                "nothing is lost."
            )
            if paused
            else _("Sending resumed: the appeals that waited leave now."),
            "ok",
        )
    else:
        flash(
            _(
                "Sending of %(campaign)s is paused. Its confirmed appeals wait in the queue; "
                "nothing is lost.",
                campaign=slug,
            )
            if paused
            else _("Sending of %(campaign)s resumed.", campaign=slug),
            "ok",
        )
    return redirect(_back())


@bp.post("/campaigns/<slug>/test-mode")
@role_required(Role.ADMIN)
def test_mode(slug: str) -> Response:
    """Test mode on (every appeal to one staff address) or off (live)."""
    if slug not in all_campaigns():
        abort(404)
    form = TestModeForm()
    page = url_for("admin.campaign_options", slug=slug)
    if not form.validate_on_submit():
        flash(_("That did not work: reload the page and try again."), "error")
        return redirect(page)
    address = None if form.test_off.data else (form.test_address.data or current_user.email)
    try:
        changed = sending.set_test_mode(slug, address, current_user.email)
    except InvalidInput as e:
        flash(e.fields["test_address"], "error")
        return redirect(page)
    if not changed:
        flash(_("Nothing changed: it was so already."), "ok")
    elif address:
        flash(_("Test mode: every appeal now goes to %(address)s only.", address=address), "ok")
    else:
        flash(_("Live: appeals go to their addressees again."), "ok")
    return redirect(page)


def _page_gate() -> sending.Gate | None:
    """The switches in force, read once per page; None if they cannot be read (an error
    page rendered after the database failed shows no banner rather than a wrong one)."""
    if "sending_gate" not in g:
        try:
            g.sending_gate = sending.read()
        except SQLAlchemyError:
            db.session.rollback()
            g.sending_gate = None
    return g.sending_gate


@bp.app_context_processor
def _sending_context() -> dict[str, Any]:
    """For the staff pages' banner (live, test mode, paused) and the campaign page."""
    return {
        "sending_gate": _page_gate,
        "sending_slugs": lambda: sorted(all_campaigns()),
        "sending_staff": sending.staff_addresses,
        "test_mode_form": TestModeForm,
    }


# --- rq-dashboard, as it is, for admins --------------------------------------------------

DASHBOARD = "/admin/rq"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def _dashboard_guard() -> Any:
    """rq-dashboard has no log-in of its own: ours, admins only."""
    if request.blueprint != "rq_dashboard":
        return None
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_admin:
        return forbidden()
    current_app.redis_conn = rq.connection()  # type: ignore[attr-defined]
    return None


def _dashboard_redis(url: str, **options: Any) -> tuple[None, Any]:
    """rq-dashboard would open a Redis client on each request and never close it; it
    gets the application's own connection (REDIS_URL) instead."""
    return None, rq.connection()


def _dashboard_headers(response: Response) -> Response:
    """The dashboard's pages carry inline scripts (allowed by their hashes, nothing else
    inline) and compile Underscore templates (``new Function``: 'unsafe-eval', on these
    admin pages only). Its buttons send the CSRF token from the cookie it reads."""
    if request.blueprint != "rq_dashboard" or not current_user.is_authenticated:
        return response
    if response.mimetype == "text/html" and not response.direct_passthrough:
        hashes = sorted(
            {
                "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
                for body in _INLINE_SCRIPT.findall(response.get_data())
            }
        )
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'self' 'unsafe-eval' {' '.join(hashes)}; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        )
        response.set_cookie(
            "_csrf_token",
            generate_csrf(),
            path=DASHBOARD,
            secure=current_app.config["PUBLIC_URL"].startswith("https://"),
            samesite="Strict",
        )
    return response


def _mount_dashboard(state: BlueprintSetupState) -> None:
    """rq-dashboard's blueprint under /admin/rq, on the app's own Redis (REDIS_URL),
    reading jobs as JSON (ours are never pickles), deleting none (the database is the
    truth: a deleted job's appeals are dispatched again anyway)."""
    import rq_dashboard
    from rq.serializers import JSONSerializer

    app = state.app
    # Shown masked on its pages; the connection is rq.connection(), on the same URL.
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", (app.config["REDIS_URL"],))
    app.config.setdefault("RQ_DASHBOARD_DISABLE_DELETE", True)
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.from_url = _dashboard_redis
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=DASHBOARD)
    app.before_request(_dashboard_guard)
    app.after_request(_dashboard_headers)


bp.record_once(_mount_dashboard)


from . import addresses as _addresses  # noqa: E402, F401 - its routes are this blueprint's
from . import diplomats as _diplomats  # noqa: E402, F401 - its routes are this blueprint's
