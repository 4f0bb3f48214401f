"""The supporter's pages: choose a campaign, write, preview, send, confirm."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

from email_validator import EmailNotValidError
from flask import (
    Blueprint,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import format_timedelta
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from .. import appeals, progress, selfsend, standing
from ..campaigns import Campaign, all_campaigns, get_campaign
from ..db import utcnow
from ..exceptions import (
    AlreadyConfirmed,
    CampaignClosed,
    CampaignPaused,
    InvalidInput,
    TokenExpired,
    TokenInvalid,
    UnknownCampaign,
)
from ..forms import AppealForm, ConfirmForm, ResendForm, SelfSentForm
from ..i18n import current_language
from ..intake import (
    countries,
    email_error,
    language_name_in,
    normalise_email,
    parse_supporter,
)
from ..letters import Letter, diplomats_for, fingerprint, letter_for
from ..models import Status
from ..printable import (
    Addressees,
    Unprintable,
    addressees,
    appeal_to_print,
    filename,
    letter_language,
    render_pdf,
)
from ..settings import relay_settings
from . import limiter
from .limits import client_key, count_this_request, email_allowed, per_client

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
        abort(404, _("There is no such campaign."))


def _form_for(campaign: Campaign) -> AppealForm:
    form = AppealForm()
    ui = current_language()
    form.language.choices = _language_choices(campaign, ui)
    form.country.choices = {"": _("Choose your country…"), **dict(countries(ui))}
    if not form.is_submitted() and ui in campaign.languages:
        form.language.data = ui  # a letter in the page's language, if there is one
    return form


def _language_choices(campaign: Campaign, ui: str) -> dict[str, str]:
    """The campaign's letter languages, named in the interface language.
    {value: label}: the shape WTForms 3.3 keeps (tuples are deprecated)."""
    return {code: language_name_in(code, ui) or code for code in campaign.languages}


def _page_context(campaign: Campaign, form: AppealForm) -> dict[str, Any]:
    """What the campaign page shows around the form (also over the rate limit)."""
    context = {
        "campaign": campaign,
        "form": form,
        "errors": {},
        "letter": None,
        "past_deadline": campaign.past_deadline(date.today()),
    }
    context["addressees"] = _page_addressees(campaign, form.language.data)
    context.update(_standing(campaign))
    return context


@bp.route("/c/<slug>", methods=["GET", "POST"])
@per_client
def campaign(slug: str) -> ResponseReturnValue:
    campaign = _campaign_or_404(slug)
    form = _form_for(campaign)
    context = _page_context(campaign, form)
    if context["state"] != standing.OPEN:
        # A paused or closed campaign shows so instead of the form; what was typed
        # comes back to be kept.
        return _unavailable(context, form)
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
            data,
            campaign,
            current_app.config["EMAIL_CHECK_DELIVERABILITY"],
            locale=current_language(),
        )
    except InvalidInput as e:
        context["errors"] = e.fields
        return render_template("public/campaign.html", **context), 422
    if form.preview.data:
        diplomats = diplomats_for(campaign, supporter.country)
        context["addressees"] = _page_addressees(
            campaign, supporter.language, supporter.country, diplomats
        )
        context["letter"] = letter_for(campaign, supporter, relay_settings().org_name, diplomats)
        context["same_letters"] = _same_letters(campaign, context["letter"], supporter)
        context.update(_send_yourself(context["letter"]))
        return render_template("public/campaign.html", **context)
    try:
        status = appeals.submit(campaign, supporter, record=email_allowed(supporter.email))
    except CampaignPaused:
        return _unavailable({**context, "state": standing.PAUSED}, form)
    except CampaignClosed:
        return _unavailable({**context, "state": standing.CLOSED}, form)
    count_this_request()
    # The same page for every valid submission: whether this address appealed before
    # is for its owner to learn, by e-mail.
    return render_template(
        "public/submitted.html", campaign=campaign, email=supporter.email, status=status
    )


def _standing(campaign: Campaign) -> dict[str, Any]:
    """Whether the campaign takes appeals, its section office after the deadline, and
    how many appeals it has sent."""
    option = appeals.options_for(campaign.slug)
    past = campaign.past_deadline(standing.today())
    country = standing.visitor_country(
        request.args.get("country"), [code for code, _ in request.accept_languages]
    )
    names = dict(countries(current_language()))
    offices = option.section_contacts if isinstance(option.section_contacts, dict) else {}
    return {
        "state": standing.state_of(campaign, option),
        "past_deadline": past,
        "section_contact": standing.section_contact(option, country) if past else "",
        "section_offices": sorted(
            ((code, names.get(code, code)) for code in offices if code in names),
            key=lambda office: office[1],
        ),
        "sent_count": progress.sent_count(campaign.slug),
        "self_sent_count": progress.self_sent_count(campaign.slug),
    }


def _unavailable(context: dict[str, Any], form: AppealForm) -> ResponseReturnValue:
    """The campaign page of a paused (503, try later) or closed (410) campaign, with
    the sentence its supporter wrote, to keep. A page view is a 200: the page is
    there, and says what it is."""
    if not form.is_submitted():
        return render_template("public/campaign.html", **context)
    # Only a form from our own page is given back (CSRF): no other site writes here.
    typed = (form.message.data or "") if form.validate_on_submit() else None
    page = render_template("public/campaign.html", **context, typed=typed)
    if context["state"] == standing.PAUSED:
        return page, 503, {"Retry-After": str(standing.PAUSED_RETRY_AFTER)}
    return page, 410


@bp.route("/c/<slug>/link", methods=["GET", "POST"])
@per_client
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
            form.email.errors = [email_error(e)]
        else:
            if email_allowed(email):
                appeals.resend(campaign, email)
            count_this_request()
            return render_template("public/resent.html", campaign=campaign, email=email)
        return render_template("public/resend.html", campaign=campaign, form=form), 422
    return render_template("public/resend.html", campaign=campaign, form=form)


@bp.errorhandler(429)
def too_many(e: HTTPException) -> tuple[str, int]:
    """Over the per-client limit (see ``limits.py``): the form comes back with what was
    typed, and says when to try again (``Retry-After`` carries the same)."""
    window = limiter.current_limit
    seconds = max(1, window.reset_at - int(time.time())) if window else 60
    message = _(
        "Many appeals have been sent from your connection just now. Nothing was sent; "
        "what you typed is still here. Please try again %(when)s.",
        when=format_timedelta(timedelta(seconds=seconds), add_direction=True),
    )
    try:
        campaign = get_campaign((request.view_args or {}).get("slug", ""))
    except UnknownCampaign:
        return render_template("error.html", code=429, message=message), 429
    title = _("Please try again later")
    if request.endpoint == "public.resend":
        page = render_template(
            "public/resend.html",
            campaign=campaign,
            form=ResendForm(),
            errors={"limit": message},
            errors_title=title,
        )
        return page, 429
    context = _page_context(campaign, _form_for(campaign))  # the form holds what was typed
    context.update(errors={"limit": message}, errors_title=title)
    return render_template("public/campaign.html", **context), 429


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> ResponseReturnValue:
    """The owner of the address reads the letter, may change it, and sends it. A GET only
    shows it: mail scanners prefetch links, and must not confirm."""
    try:
        appeal = appeals.pending(token)
    except TokenExpired:
        return render_template("public/confirm_expired.html"), 410
    except AlreadyConfirmed as e:
        return _already_confirmed(e.public_id)
    except TokenInvalid:
        return render_template("public/confirm_invalid.html"), 404
    campaign = get_campaign(appeal.campaign)
    option = appeals.options_for(campaign.slug)
    if standing.state_of(campaign, option) == standing.CLOSED:
        return _closed_before_confirmed(campaign)
    form = _confirm_form(campaign, appeal)
    context = {"form": form, "campaign": campaign, "errors": {}}
    writer: Any = appeal
    edited = None
    if form.validate_on_submit():
        edited, context["errors"] = _owner_edits(form, appeal, campaign)
        writer = edited or appeal
        if not context["errors"] and not form.preview.data:
            try:
                confirmed = appeals.confirm(token, edited)
            except TokenExpired:
                return render_template("public/confirm_expired.html"), 410
            except AlreadyConfirmed as e:  # pressed twice
                return _already_confirmed(e.public_id)
            except TokenInvalid:
                return render_template("public/confirm_invalid.html"), 404
            except CampaignClosed:
                return _closed_before_confirmed(campaign)
            expected = progress.expected_after_confirm(confirmed)
            return render_template(
                "public/confirmed.html",
                appeal=confirmed,
                campaign=campaign,
                expected_at=expected,
                wait=expected - utcnow() if expected else None,
            )
    elif form.is_submitted():
        return render_template("public/confirm_invalid.html"), 400
    context["letter"] = letter_for(campaign, writer, relay_settings().org_name)
    context["same_letters"] = _same_letters(campaign, context["letter"], writer)
    context["addressees"] = _page_addressees(campaign, writer.language, writer.country)
    context.update(_send_yourself(context["letter"], token))
    code = 422 if context["errors"] else 200
    return render_template("public/confirm.html", **context), code


def _send_yourself(letter: Letter, token: str = "") -> dict[str, Any]:
    """The "send it yourself" links and report form of a previewed letter; from the
    confirmation page, the form carries the link's token (the report is that appeal's)."""
    form = SelfSentForm(formdata=None, data={"token": token})
    return {"self_send": selfsend.links_for(letter), "self_sent_form": form}


SELF_SENT_KEY = "self_sent"
"""The campaigns this browser reported a self-sent letter for, without an appeal."""


@bp.post("/c/<slug>/self-sent")
@per_client
def self_sent(slug: str) -> ResponseReturnValue:
    """ "I sent it myself": the supporter's word, counted as self-sent (reported) and
    never as delivered. It leaves their appeal as it is (see :func:`selfsend.record`).
    One report per appeal, or per browser and campaign without one."""
    campaign = _campaign_or_404(slug)
    form = SelfSentForm()
    if not form.validate_on_submit():  # CSRF (a missing token is refused before this)
        abort(400)
    token = form.token.data or ""
    context = {"campaign": campaign, "form": form, "token": token}
    context.update(recorded=False, waiting=False)
    if form.channel.data not in selfsend.CHANNELS:
        form.channel.errors = [_("Please choose how you sent the letter.")]
        return render_template("public/self_sent.html", **context), 422
    appeal = selfsend.appeal_for(token, slug) if token else None
    appeal_id = appeal[0] if appeal else None
    context["waiting"] = bool(appeal and appeal[1] == Status.AWAITING_CONFIRMATION)
    reported = session.get(SELF_SENT_KEY, [])
    if appeal_id is None and slug in reported:
        return render_template("public/self_sent.html", **context)
    context["recorded"] = selfsend.record(slug, form.channel.data, appeal_id)
    if context["recorded"]:
        count_this_request()
        if appeal_id is None:
            session[SELF_SENT_KEY] = [*reported[-19:], slug]
    return render_template("public/self_sent.html", **context)


def _owner_edits(
    form: ConfirmForm, appeal: Any, campaign: Campaign
) -> tuple[Any | None, dict[str, str]]:
    """The confirmation page's own fields, the owner's last word on their letter: the
    supporter as edited (None if the page sent no fields), or the fields' errors."""
    if not form.name.raw_data:
        return None, {}
    data = {f: getattr(form, f).data for f in ("name", "language", "country", "message")}
    try:
        edited = parse_supporter(
            {**data, "email": appeal.email, "consent": True},
            campaign,
            False,
            locale=current_language(),
        )
    except InvalidInput as e:
        return None, e.fields
    return edited, {}


def _same_letters(campaign: Campaign, letter: Letter, writer: Any) -> int:
    """How many others sent this very text: the preview invites a sentence of one's own."""
    return appeals.same_letters(campaign.slug, fingerprint(letter.text, writer.name), writer.email)


def _already_confirmed(public_id: str) -> ResponseReturnValue:
    """A confirmation link opened again: the appeal went already; here is where it is."""
    return status(public_id, already_confirmed=True)


def _closed_before_confirmed(campaign: Campaign) -> ResponseReturnValue:
    """The campaign closed before its owner confirmed: nothing goes in their name."""
    context = {"campaign": campaign, "errors": {}, "unsent": True}
    context.update(_standing(campaign))
    return render_template("public/campaign.html", **context), 410


@bp.get("/appeal/<public_id>")
def status(public_id: str, already_confirmed: bool = False) -> ResponseReturnValue:
    """Where an appeal is, for its owner, through the unguessable link in their mail."""
    found = progress.find(public_id)
    campaign = all_campaigns().get(found.campaign) if found is not None else None
    if found is None or campaign is None:
        abort(404, _("No appeal has this link. Please check that it was copied whole."))
    wait = found.expected_at - utcnow() if found.expected_at else None
    response = make_response(
        render_template(
            "public/status.html",
            progress=found,
            campaign=campaign,
            wait=wait,
            already_confirmed=already_confirmed,
        )
    )
    # Its owner's alone: no cache keeps it, no search engine lists it.
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _confirm_form(campaign: Campaign, appeal: Any) -> ConfirmForm:
    form = ConfirmForm(
        data={
            "name": appeal.name,
            "language": appeal.language,
            "country": appeal.country,
            "message": appeal.message or "",
        }
    )
    ui = current_language()
    form.language.choices = _language_choices(campaign, ui)
    form.country.choices = dict(countries(ui))
    return form


# --- Addressees and the printable letter ---------------------------------------------------


def _page_addressees(
    campaign: Campaign, language: str | None, country: str | None = None, diplomats: Any = None
) -> Addressees:
    """Every addressee's block in the letter's language; with a country, its diplomats."""
    ui = current_language()
    language = letter_language(campaign, language, ui)
    return addressees(campaign, language, country, diplomats, ui=ui)


def _pdf_limit() -> str:
    return str(current_app.config["RATELIMIT_APPEALS"])


def _letter_pdf(campaign: Campaign, writer: Any) -> Response:
    """The printable letter as a download; raises :class:`Unprintable`."""
    response = Response(render_pdf(campaign, writer, relay_settings().org_name))
    response.mimetype = "application/pdf"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename(campaign)}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _unprintable(e: Unprintable) -> dict[str, str]:
    return {
        "pdf": _(
            "The printable letter cannot show these characters: %(characters)s. "
            "Remove them to print it; your e-mail appeal can keep them.",
            characters=" ".join(e.characters),
        )
    }


@bp.post("/c/<slug>/letter.pdf")
@limiter.limit(_pdf_limit, key_func=client_key)
def letter_pdf(slug: str) -> Response | tuple[str, int]:
    """The printable letter of the form as it stands (the preview's button): it is
    checked as a preview is, and nothing is stored or sent."""
    campaign = _campaign_or_404(slug)
    form = _form_for(campaign)
    context = _page_context(campaign, form)
    # The page answers from this route: its buttons post to the campaign's.
    context["form_action"] = url_for("public.campaign", slug=campaign.slug)
    if not form.validate_on_submit():  # CSRF; the fields are checked by parse_supporter
        context["errors"] = {k: " ".join(v) for k, v in form.errors.items()}
        return render_template("public/campaign.html", **context), 400
    data = {f: getattr(form, f).data for f in ("name", "email", "language", "country", "message")}
    data["consent"] = True  # nothing is sent in anyone's name
    try:
        supporter = parse_supporter(
            data,
            campaign,
            current_app.config["EMAIL_CHECK_DELIVERABILITY"],
            locale=current_language(),
        )
        return _letter_pdf(campaign, supporter)
    except InvalidInput as e:
        context["errors"] = e.fields
    except Unprintable as e:
        context["errors"] = _unprintable(e)
    return render_template("public/campaign.html", **context), 422


@bp.post("/confirm/<token>/letter.pdf")
@limiter.limit(_pdf_limit, key_func=client_key)
def confirm_letter_pdf(token: str) -> Response | tuple[str, int]:
    """The printable letter from the confirmation page, with the owner's changes on
    the page: it neither confirms nor stores anything."""
    try:
        appeal = appeals.pending(token)
    except TokenExpired:
        return render_template("public/confirm_expired.html"), 410
    except TokenInvalid:
        return render_template("public/confirm_invalid.html"), 404
    campaign = get_campaign(appeal.campaign)
    form = _confirm_form(campaign, appeal)
    if not form.validate_on_submit():
        return render_template("public/confirm_invalid.html"), 400
    edited, errors = _owner_edits(form, appeal, campaign)
    writer: Any = edited or appeal
    if not errors:
        try:
            return _letter_pdf(campaign, writer)
        except Unprintable as e:
            errors = _unprintable(e)
    context = {
        "form": form,
        "campaign": campaign,
        "errors": errors,
        "letter": letter_for(campaign, writer, relay_settings().org_name),
        "addressees": _page_addressees(campaign, writer.language, writer.country),
        "form_action": url_for("public.confirm", token=token),
    }
    return render_template("public/confirm.html", **context), 422


@bp.get("/appeal/<public_id>/letter.pdf")
@limiter.limit(_pdf_limit, key_func=client_key)
def appeal_letter_pdf(public_id: str) -> Response | tuple[str, int]:
    """The printable letter of a confirmed appeal, for its owner: the link holds the
    appeal's unguessable id and comes with the confirmation. Not once erased."""
    appeal = appeal_to_print(public_id)
    if appeal is None:
        abort(404, _("There is no letter to print here: the link is wrong, or it was erased."))
    try:
        return _letter_pdf(get_campaign(appeal.campaign), appeal)
    except Unprintable as e:
        abort(422, _unprintable(e)["pdf"])
