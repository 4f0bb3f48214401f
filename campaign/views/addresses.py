"""Admins: the addressees' e-mail addresses, and changing one at run time.

``GET /admin/addresses`` lists every address mail is written to (the campaign files'
addressees, with the address in force, and the diplomats on file) with its copies
queued, held, bounced and refused, a form to change one (``?old=`` fills it in: the
bounces page links here from a flagged target) and the changes made so far. The
form's first POST shows what the change will do and asks; the second makes it. The
rules are :mod:`campaign.addresses`'.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, SelectField, StringField, SubmitField
from wtforms.validators import Length

from .. import addresses as service
from ..campaigns import all_campaigns
from ..exceptions import InvalidInput
from ..models import Role
from ..users import role_required
from .admin import bp

EVERY = ""
"""The campaign field's value for a change that applies to every campaign."""


class AddressChangeForm(FlaskForm):
    old = StringField(
        _l("Old address"),
        validators=[Length(max=service.ADDRESS_MAX)],
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    new = StringField(
        _l("New address"),
        validators=[Length(max=service.ADDRESS_MAX)],
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    campaign = SelectField(_l("For"), choices=[], validate_choice=False)
    reroute = BooleanField(_l("Re-route queued, held and bounced mail"), default=True)
    review = SubmitField(_l("Review the change"))
    confirm = SubmitField(_l("Yes, change the address"))

    def fill(self) -> None:
        self.campaign.choices = [
            (EVERY, _("Every campaign")),
            *((slug, slug) for slug in sorted(all_campaigns())),
        ]


def _page(form: AddressChangeForm, code: int = 200) -> tuple[str, int]:
    return render_template(
        "admin/addresses.html",
        form=form,
        rows=service.in_use(),
        history=service.history(),
        errors={name: " ".join(e) for name, e in form.errors.items()},
    ), code


def _checked(form: AddressChangeForm) -> tuple[str, str, str | None] | None:
    """The form's values through :func:`campaign.addresses.check`; errors onto the form."""
    campaign = form.campaign.data or None
    try:
        if campaign is not None and campaign not in all_campaigns():
            raise InvalidInput({"campaign": _("There is no such campaign.")})
        old, new = service.check(form.old.data or "", form.new.data or "")
    except InvalidInput as e:
        for key, message in e.fields.items():
            getattr(form, key).errors = [message]
        return None
    return old, new, campaign


@bp.get("/addresses")
@role_required(Role.ADMIN)
def addresses() -> tuple[str, int]:
    form = AddressChangeForm(formdata=None)
    form.fill()
    form.old.data = request.args.get("old", "")[: service.ADDRESS_MAX].strip()
    return _page(form)


@bp.post("/addresses")
@role_required(Role.ADMIN)
def address_change() -> str | Response | tuple[str, int]:
    """The first POST (``review``) shows what the change will do; the second
    (``confirm``) makes it. Both check the input the same way."""
    form = AddressChangeForm()
    form.fill()
    if not form.validate_on_submit():
        return _page(form, 422)
    checked = _checked(form)
    if checked is None:
        return _page(form, 422)
    old, new, campaign = checked
    if not form.confirm.data:
        plan = service.plan(old, new, campaign) if form.reroute.data else None
        return render_template(
            "admin/addresses.html",
            form=form,
            confirming={"old": old, "new": new, "campaign": campaign, "plan": plan},
            current=service.current(old, campaign),
        ), 200
    rerouted = service.change(
        old, new, campaign=campaign, actor=current_user.email, reroute=bool(form.reroute.data)
    )
    flash(
        ngettext(
            "%(old)s is %(new)s from now on; %(num)s copy re-routed.",
            "%(old)s is %(new)s from now on; %(num)s copies re-routed.",
            rerouted,
            old=old,
            new=new,
        ),
        "ok",
    )
    return redirect(url_for("admin.addresses"))
