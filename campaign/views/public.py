"""The supporter's pages: choose a campaign, write, preview, send, confirm."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, current_app, redirect, render_template, url_for
from werkzeug.wrappers import Response

from .. import appeals
from ..campaigns import Campaign, all_campaigns, get_campaign
from ..exceptions import (
    CampaignClosed,
    DuplicateAppeal,
    InvalidInput,
    TokenInvalid,
    UnknownCampaign,
)
from ..forms import AppealForm, ConfirmForm
from ..intake import countries, language_name, parse_supporter
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
        appeal = appeals.submit(campaign, supporter)
    except DuplicateAppeal:
        context["errors"] = {
            "email": "An appeal from this address has already been sent "
            "in this campaign. Thank you!"
        }
        return render_template("public/campaign.html", **context), 409
    except CampaignClosed:
        abort(409, "This campaign is paused and is not taking appeals right now.")
    return render_template("public/submitted.html", campaign=campaign, appeal=appeal)


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> str | tuple[str, int]:
    # GET only shows a button: mail scanners prefetch links, and must not confirm.
    form = ConfirmForm()
    if not form.validate_on_submit():
        return render_template("public/confirm.html", form=form, token=token)
    try:
        appeal = appeals.confirm(token)
    except TokenInvalid:
        return render_template("public/confirm_invalid.html"), 404
    return render_template(
        "public/confirmed.html", appeal=appeal, campaign=get_campaign(appeal.campaign)
    )
