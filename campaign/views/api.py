"""JSON API: ``POST /api/v1/campaigns/<slug>/appeals`` and friends.

Bad input answers 400 (not JSON, not an object) or 422 (field errors) with
``{"error", "fields"}``; it never answers 500. Error codes and field names are
stable; the ``message`` texts follow ``Accept-Language``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask_babel import gettext as _

from .. import appeals, standing
from ..campaigns import all_campaigns, get_campaign
from ..db import db
from ..exceptions import (
    CampaignClosed,
    CampaignPaused,
    InvalidInput,
    TokenExpired,
    TokenInvalid,
    UnknownCampaign,
)
from ..i18n import current_language
from ..intake import parse_supporter
from ..models import Appeal, Status
from .limits import count_this_request, email_allowed, per_client

bp = Blueprint("api", __name__, url_prefix="/api/v1")

Reply = tuple[Response, int]


def _error(code: int, error: str, message: str, fields: dict[str, str] | None = None) -> Reply:
    return jsonify(error=error, message=message, fields=fields or {}), code


@bp.get("/campaigns")
def campaigns() -> Response:
    return jsonify(
        campaigns=[
            {
                "slug": c.slug,
                "title": c.title,
                "languages": list(c.languages),
                "deadline": c.deadline.isoformat() if c.deadline else None,
                "state": standing.state_of(c, appeals.options_for(c.slug)),
            }
            for c in all_campaigns().values()
        ]
    )


def _status(appeal: Any) -> dict[str, Any]:
    # From PUBLIC_URL, never from the request's Host header, which the client chooses.
    base = current_app.config["PUBLIC_URL"].rstrip("/")
    return {
        "id": appeal.public_id,
        "status": appeal.status,
        "campaign": appeal.campaign,
        "status_url": f"{base}{bp.url_prefix}/appeals/{appeal.public_id}",
        "status_page": f"{base}/appeal/{appeal.public_id}",
    }


def _not_taking(paused: bool) -> Reply:
    """A paused campaign: 503, try again after ``Retry-After``; a closed one: 410."""
    if not paused:
        return _error(410, "campaign_closed", _("This campaign is closed: it takes no appeals."))
    response, code = _error(
        503, "campaign_paused", _("This campaign is not taking appeals right now.")
    )
    response.headers["Retry-After"] = str(standing.PAUSED_RETRY_AFTER)
    return response, code


@bp.post("/campaigns/<slug>/appeals")
@per_client
def submit(slug: str) -> Reply:
    """The same answer for every valid submission, whether or not the address appealed
    before: the owner of the address learns the rest by e-mail."""
    try:
        campaign = get_campaign(slug)
    except UnknownCampaign:
        return _error(404, "unknown_campaign", _("There is no such campaign."))
    state = standing.state_of(campaign, appeals.options_for(slug))
    if state != standing.OPEN:  # before the body: nothing it says changes this
        return _not_taking(state == standing.PAUSED)
    if not request.is_json:
        return _error(400, "not_json", _("Send a JSON object with Content-Type: application/json."))
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        return _error(400, "bad_json", _("The body must be a JSON object."))
    try:
        # The interface language (Accept-Language, or the body's optional "locale")
        # is the one the supporter's mail speaks.
        supporter = parse_supporter(
            data,
            campaign,
            current_app.config["EMAIL_CHECK_DELIVERABILITY"],
            locale=current_language(),
        )
    except InvalidInput as e:
        return _error(422, "invalid_input", _("Some fields need attention."), e.fields)
    try:
        status = appeals.submit(campaign, supporter, record=email_allowed(supporter.email))
    except CampaignClosed as e:
        return _not_taking(isinstance(e, CampaignPaused))
    count_this_request()
    message = (
        _("Thank you. We have sent an e-mail to this address; its link sends the appeal.")
        if status == Status.AWAITING_CONFIRMATION
        else _("Thank you. The appeal goes out from this address unless it went already.")
    )
    return jsonify(status=status, message=message), 202


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@bp.get("/appeals/<public_id>")
def appeal_status(public_id: str) -> Reply:
    appeal = db.session.scalar(db.select(Appeal).filter_by(public_id=public_id[:36]))
    if appeal is None:
        return _error(404, "not_found", _("No appeal has this id."))
    body = _status(appeal)
    body["created_at"] = appeal.created_at.isoformat()
    body["sent_at"] = _iso(appeal.sent_at)
    body["erased"] = appeal.erased_at is not None
    # Each addressee's copy: the officials' public addresses, never the supporter's.
    body["recipients"] = [
        {
            "role": r.role,
            "address": r.address,
            "status": r.status,
            "attempts": r.attempts,
            "last_reply": r.last_reply,
            "accepted_at": _iso(r.accepted_at),
        }
        for r in appeal.recipients
    ]
    return jsonify(body), 200


@bp.post("/confirm/<token>")
def confirm(token: str) -> Reply:
    """Only the owner of the address has the token: the answer carries the status URL."""
    try:
        appeal = appeals.confirm(token)
    except TokenExpired:
        return _error(410, "expired_token", _("This link has expired; please write again."))
    except TokenInvalid:
        return _error(404, "invalid_token", _("This link is not valid, or was used already."))
    except CampaignClosed:
        return _not_taking(paused=False)
    return jsonify(_status(appeal)), 200
