"""Synthetic supporters, for load tests and benchmarks. Never against a real relay."""

from __future__ import annotations

import uuid

from sqlalchemy import insert

from . import states
from .campaigns import get_campaign
from .db import db, utcnow
from .delivery.transport import is_loopback
from .exceptions import RelayRefused
from .models import Appeal, Status
from .settings import relay_settings

CHUNK = 5000


def create_synthetic(slug: str, count: int) -> int:
    """Make ``count`` confirmed appeals, queued for delivery; refuses unless the relay
    is on loopback. They come and move as real ones do, events included.

    The seed's addresses belong to real people: synthetic load must never leave
    this machine.
    """
    relay = relay_settings()
    if not is_loopback(relay.host):
        raise RelayRefused(
            f"the relay {relay.host!r} is not on loopback: synthetic appeals would reach "
            "real people. Point MAIL_SERVER at a local sink first."
        )
    campaign = get_campaign(slug)
    languages = campaign.languages
    countries = ("GB", "DE", "FR", "ES", "US", "MX", "AR", "IT", "NL", "SE")
    now = utcnow()
    run = uuid.uuid4().hex[:8]
    for start in range(0, count, CHUNK):
        rows = [
            {
                "public_id": str(uuid.uuid4()),
                "campaign": slug,
                "name": f"Synthetic Supporter {run}-{i}",
                "email": f"supporter-{run}-{i}@example.org",
                "language": languages[i % len(languages)],
                "country": countries[i % len(countries)],
                "message": None,
                "status": Status.AWAITING_CONFIRMATION,
                "status_reason": "synthetic load",  # its creation event's reason (trigger)
                "attempts": 0,
                "created_at": now,
                "confirmed_at": now,
                "updated_at": now,
            }
            for i in range(start, min(count, start + CHUNK))
        ]
        ids = db.session.scalars(insert(Appeal).returning(Appeal.id), rows).all()
        states.move(ids, Status.AWAITING_CONFIRMATION, Status.QUEUED, reason="synthetic load")
        db.session.commit()
    return count
