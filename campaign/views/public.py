"""The supporter's pages: choose a campaign, write, preview, send, confirm."""

from __future__ import annotations

from datetime import date
from typing import Any

from email_validator import EmailNotValidError
from flask import Blueprint, abort, current_app, redirect, render_template, url_for
from werkzeug.wrappers import Response

from .. import appeals
from ..campaigns import Campaign, all_campaigns, get_campaign
from ..exceptions import (
    CampaignClosed,
    InvalidInput,
    TokenExpired,
    TokenInvalid,
    UnknownCampaign,
)
from ..forms import AppealForm, ConfirmForm, ResendForm
from ..intake import countries, language_name, normalise_email, parse_supporter
from ..letters import letter_for
from ..settings import relay_settings
from . import limiter

bp = Blueprint("public", __name__)


@bp.get("/")
def index() -> str | Response:
    campaigns = all_campaigns()
    if len(campaigns) == 1:
        return redirect(url_for("public.campaign", slug=next(iter(campaigns))))
    return render_template("public/index.html", campaigns=campaigns.values())


def _campaign_or_404(slug: str) -> Campaign:
    try:
        return get_campaign(slug)
    except UnknownCampaign:
        abort(404, "There is no such campaign.")


def _form_for(campaign: Campaign) -> AppealForm:
    form = AppealForm()
    # {value: label}: the shape WTForms 3.3 keeps (tuples are deprecated).
    form.language.choices = {code: language_name(code) or code for code in campaign.languages}
    form.country.choices = {"": "Choose your country…", **dict(countries())}
    return form


def _appeal_limit() -> str:
    return str(current_app.config["RATELIMIT_APPEALS"])


@bp.route("/c/<slug>", methods=["GET", "POST"])
@limiter.limit(_appeal_limit, methods=["POST"])
def campaign(slug: str) -> str | tuple[str, int]:
    campaign = _campaign_or_404(slug)
    form = _form_for(campaign)
    context = {
        "campaign": campaign,
        "form": form,
        "errors": {},
        "letter": None,
        "past_deadline": campaign.past_deadline(date.today()),
    }
    if not form.is_submitted():
        return render_template("public/campaign.html", **context)
    if not form.validate_on_submit():  # CSRF; the fields are checked by parse_supporter
        context["errors"] = {k: " ".join(v) for k, v in form.errors.items()}
        return render_template("public/campaign.html", **context), 400
    data = {
        f: getattr(form, f).data
        for f in ("name", "email", "language", "country", "message", "consent")
    }
    if form.preview.data:
        data["consent"] = True  # consent is asked for on sending, not for a preview
    try:
        supporter = parse_supporter(
            data, campaign, current_app.config["EMAIL_CHECK_DELIVERABILITY"]
        )
    except InvalidInput as e:
        context["errors"] = e.fields
        return render_template("public/campaign.html", **context), 422
    if form.preview.data:
        context["letter"] = letter_for(campaign, supporter, relay_settings().org_name)
        return render_template("public/campaign.html", **context)
    try:
        status = appeals.submit(campaign, supporter)
    except CampaignClosed:
        abort(409, "This campaign is paused and is not taking appeals right now.")
    # The same page for every valid submission: whether this address appealed before
    # is for its owner to learn, by e-mail.
    return render_template(
        "public/submitted.html", campaign=campaign, email=supporter.email, status=status
    )


@bp.route("/c/<slug>/link", methods=["GET", "POST"])
@limiter.limit(_appeal_limit, methods=["POST"])
def resend(slug: str) -> str | tuple[str, int]:
    """ "Send me the link again": the same answer whatever the address."""
    campaign = _campaign_or_404(slug)
    form = ResendForm()
    if form.validate_on_submit():
        try:
            email = normalise_email(
                (form.email.data or "").strip(), current_app.config["EMAIL_CHECK_DELIVERABILITY"]
            )
        except EmailNotValidError as e:
            form.email.errors = [str(e)]
        else:
            appeals.resend(campaign, email)
            return render_template("public/resent.html", campaign=campaign, email=email)
        return render_template("public/resend.html", campaign=campaign, form=form), 422
    return render_template("public/resend.html", campaign=campaign, form=form)


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> str | tuple[str, int]:
    """The owner of the address reads the letter, may change it, and sends it. A GET only
    shows it: mail scanners prefetch links, and must not confirm."""
    try:
        appeal = appeals.pending(token)
    except TokenExpired:
        return render_template("public/confirm_expired.html"), 410
    except TokenInvalid:
        return render_template("public/confirm_invalid.html"), 404
    campaign = get_campaign(appeal.campaign)
    form = _confirm_form(campaign, appeal)
    context = {"form": form, "campaign": campaign, "errors": {}}
    writer: Any = appeal
    edited = None
    if form.validate_on_submit():
        if form.name.raw_data:  # the page's own fields: the owner's last word
            data = {f: getattr(form, f).data for f in ("name", "language", "country", "message")}
            try:
                edited = parse_supporter(
                    {**data, "email": appeal.email, "consent": True}, campaign, False
                )
            except InvalidInput as e:
                context["errors"] = e.fields
            else:
                writer = edited
        if not context["errors"] and not form.preview.data:
            try:
                confirmed = appeals.confirm(token, edited)
            except TokenExpired:
                return render_template("public/confirm_expired.html"), 410
            except TokenInvalid:
                return render_template("public/confirm_invalid.html"), 404
            return render_template("public/confirmed.html", appeal=confirmed, campaign=campaign)
    elif form.is_submitted():
        return render_template("public/confirm_invalid.html"), 400
    context["letter"] = letter_for(campaign, writer, relay_settings().org_name)
    code = 422 if context["errors"] else 200
    return render_template("public/confirm.html", **context), code


def _confirm_form(campaign: Campaign, appeal: Any) -> ConfirmForm:
    form = ConfirmForm(
        data={
            "name": appeal.name,
            "language": appeal.language,
            "country": appeal.country,
            "message": appeal.message or "",
        }
    )
    form.language.choices = {code: language_name(code) or code for code in campaign.languages}
    form.country.choices = dict(countries())
    return form
