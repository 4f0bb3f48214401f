"""Retention: a supporter's personal data is kept only while it serves their appeal.

* ``RETENTION_DAYS`` (30) after an appeal was sent, failed or cancelled, its name,
  e-mail address and sentence are removed; letters are never stored, only rendered.
* An appeal never confirmed is cancelled once its link expires
  (``CONFIRM_TOKEN_DAYS``, 7), and its data removed.
* A manager (``/manage/erase``) or an operator (``flask appeals erase EMAIL``) can
  remove one supporter's data at any time, on request.

What stays is anonymous: campaign, language, country, states and times, so that the
counts on ``/manage`` stay true. The dispatcher applies retention every hour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import literal, update

from . import audit, states
from .db import db, utcnow
from .models import Appeal, AppealEvent, Status
from .tokens import issued_since

FINAL = (Status.SENT, Status.FAILED, Status.CANCELLED)
CANCELLABLE = (Status.AWAITING_CONFIRMATION, Status.QUEUED, Status.RETRYING, Status.HELD)


@dataclass
class RetentionReport:
    expired: int = 0
    erased: int = 0
    captured_mail_removed: int = 0


def _scrub(ids: list[int]) -> int:
    """Remove the personal data of these appeals (not of one being sent right now)."""
    if not ids:
        return 0
    now = utcnow()
    erased = db.session.scalars(
        update(Appeal)
        .where(
            Appeal.id.in_(ids),
            Appeal.erased_at.is_(None),
            Appeal.status != Status.SENDING,
        )
        .values(
            name="",
            # Unique per campaign, like the address it replaces, and no one's address.
            email=literal("erased-") + Appeal.public_id,
            message=None,
            confirm_token_hash=None,
            status_reason=None,
            erased_at=now,
            updated_at=now,
        )
        .returning(Appeal.id)
    ).all()
    if erased:
        # A reason may quote the supporter (a relay's refusal names the address).
        db.session.execute(
            update(AppealEvent).where(AppealEvent.appeal_id.in_(erased)).values(reason=None)
        )
    return len(erased)


def erase_supporter(email: str, by: str) -> int:
    """Cancel what of theirs has not gone yet and remove their data; returns how many
    appeals were erased. An appeal being sent right now is left for a moment."""
    address = email.strip().lower()
    ids = list(db.session.scalars(db.select(Appeal.id).where(Appeal.email == address)))
    states.move(ids, CANCELLABLE, Status.CANCELLED, reason="erased on request")
    count = _scrub(ids)
    audit.record("supporter erased", f"{count} appeal(s)", actor=by)
    db.session.commit()
    return count


def apply_retention() -> RetentionReport:
    config = current_app.config
    now = utcnow()
    report = RetentionReport()
    stale = list(
        db.session.scalars(
            db.select(Appeal.id).where(
                Appeal.status == Status.AWAITING_CONFIRMATION,
                Appeal.token_issued_at < issued_since(),
            )
        )
    )
    report.expired = len(
        states.move(stale, Status.AWAITING_CONFIRMATION, Status.CANCELLED, reason="link expired")
    )
    due_before = now - timedelta(days=float(config["RETENTION_DAYS"]))
    done = list(
        db.session.scalars(
            db.select(Appeal.id).where(
                Appeal.status.in_(FINAL),
                Appeal.erased_at.is_(None),
                Appeal.updated_at < due_before,
            )
        )
    )
    report.erased = _scrub(done + stale)
    if report.expired or report.erased:
        audit.record("retention", f"{report.expired} expired, {report.erased} erased", "system")
    db.session.commit()
    if config.get("MAIL_CAPTURE"):
        report.captured_mail_removed = _prune_capture(
            Path(config["MAIL_CAPTURE_DIR"]), float(config["RETENTION_DAYS"])
        )
    return report


def _prune_capture(directory: Path, days: float) -> int:
    """The local mail capture holds whole letters: the same limit applies to it."""
    cutoff = time.time() - days * 86400
    removed = 0
    for sub in ("new", "cur"):
        folder = directory / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
    return removed
