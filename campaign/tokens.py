"""Confirmation tokens: the key in a supporter's link, and the hash that is stored.

A token is derived from its appeal (public id, issue time) and the secret key: the
worker that mails it needs no secret from Redis, and a link sent twice is the same
link. Only its hash is stored, so the database alone never lets anyone confirm.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app

from .db import utcnow


def issued_since() -> datetime:
    """The oldest issue time of a link that still works (``CONFIRM_TOKEN_DAYS``)."""
    return utcnow() - timedelta(days=float(current_app.config["CONFIRM_TOKEN_DAYS"]))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def confirmation_token(appeal: Any) -> str:
    """The token in the appeal's confirmation link."""
    issued: datetime = appeal.token_issued_at.astimezone(UTC)
    message = f"confirm:{appeal.public_id}:{issued:%Y%m%dT%H%M%S.%f}".encode()
    key = current_app.secret_key.encode()  # type: ignore[union-attr]
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
