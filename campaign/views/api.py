"""JSON API: ``POST /api/v1/campaigns/<slug>/appeals`` and friends.

Bad input answers 400 (not JSON, not an object) or 422 (field errors) with
``{"error", "fields"}``; it never answers 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .. import appeals
from ..campaigns import all_campaigns, get_campaign
from ..db import db
from ..exceptions import (
    CampaignClosed,
    InvalidInput,
    TokenExpired,
    TokenInvalid,
    UnknownCampaign,
)
from ..intake import parse_supporter
from ..models import Appeal, Status
from . import limiter

bp = Blueprint("api", __name__, url_prefix="/api/v1")

Reply = tuple[Response, int]


def _error(code: int, error: str, message: str, fields: dict[str, str] | None = None) -> Reply:
    return jsonify(error=error, message=message, fields=fields or {}), code


def _appeal_limit() -> str:
    return str(current_app.config["RATELIMIT_APPEALS"])


@bp.get("/campaigns")
def campaigns() -> Response:
    return jsonify(
        campaigns=[
            {
                "slug": c.slug,
                "title": c.title,
                "languages": list(c.languages),
                "deadline": c.deadline.isoformat() if c.deadline else None,
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
    }


@bp.post("/campaigns/<slug>/appeals")
@limiter.limit(_appeal_limit)
def submit(slug: str) -> Reply:
    """The same answer for every valid submission, whether or not the address appealed
    before: the owner of the address learns the rest by e-mail."""
    try:
        campaign = get_campaign(slug)
    except UnknownCampaign:
        return _error(404, "unknown_campaign", "There is no such campaign.")
    if not request.is_json:
        return _error(400, "not_json", "Send a JSON object with Content-Type: application/json.")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes
        data = None
    if not isinstance(data, dict):
        return _error(400, "bad_json", "The body must be a JSON object.")
    try:
        supporter = parse_supporter(
            data, campaign, current_app.config["EMAIL_CHECK_DELIVERABILITY"]
        )
    except InvalidInput as e:
        return _error(422, "invalid_input", "Some fields need attention.", e.fields)
    try:
        status = appeals.submit(campaign, supporter)
    except CampaignClosed:
        return _error(409, "campaign_paused", "This campaign is not taking appeals right now.")
    message = (
        "Thank you. We have sent an e-mail to this address; its link sends the appeal."
        if status == Status.AWAITING_CONFIRMATION
        else "Thank you. The appeal goes out from this address unless it went already."
    )
    return jsonify(status=status, message=message), 202


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@bp.get("/appeals/<public_id>")
def appeal_status(public_id: str) -> Reply:
    appeal = db.session.scalar(db.select(Appeal).filter_by(public_id=public_id[:36]))
    if appeal is None:
        return _error(404, "not_found", "No appeal has this id.")
    body = _status(appeal)
    body["created_at"] = appeal.created_at.isoformat()
    body["sent_at"] = _iso(appeal.sent_at)
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
        return _error(410, "expired_token", "This link has expired; please write again.")
    except TokenInvalid:
        return _error(404, "invalid_token", "This link is not valid, or was used already.")
    return jsonify(_status(appeal)), 200
