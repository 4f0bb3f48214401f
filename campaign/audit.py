"""The audit log: who did what and when, for admins to read at ``/admin/audit``.

Sign-ins (and failed ones), settings changes, steering, exports and erasures are
recorded here, in the same transaction as what they record; the caller commits.
"""

from __future__ import annotations

from flask import has_request_context, request
from flask_login import current_user

from .db import db
from .models import AuditEvent

DETAIL_MAX = 2000


def record(action: str, detail: str | None = None, actor: str | None = None) -> None:
    """Add an audit event; ``actor`` defaults to the signed-in staff member."""
    client = None
    if has_request_context():
        client = (request.remote_addr or "")[:64] or None
        if actor is None and current_user.is_authenticated:
            actor = current_user.email
    db.session.add(
        AuditEvent(
            actor=(actor or "anonymous")[:254],
            action=action,
            detail=detail[:DETAIL_MAX] if detail else None,
            client=client,
        )
    )


def latest(limit: int = 200) -> list[AuditEvent]:
    return list(
        db.session.scalars(db.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit))
    )
