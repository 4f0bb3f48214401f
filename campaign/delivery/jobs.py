"""The RQ jobs, and nothing else: they carry ids only, build the runner's parts from the
application, and let unexpected exceptions through (RQ records them; the
dispatcher recovers the rows). These three are the only functions a worker runs
(:data:`~.queue.JOBS`).
"""

from __future__ import annotations

import secrets

from flask import current_app
from rq import get_current_job

from ..campaigns import get_campaign
from ..settings import RelaySettings, relay_settings
from . import confirmations, receipts, runner
from .journal import Journal
from .pacing import Pacer, pacing_rules
from .queue import rq
from .transport import RelayConnection


def _job_id() -> str:
    job = get_current_job()
    return job.id if job is not None else "direct-" + secrets.token_hex(8)


def connection(relay: RelaySettings) -> RelayConnection:
    """A session with the relay, with this installation's limits and guards."""
    config = current_app.config
    return RelayConnection(
        relay,
        loopback_only=config["MAIL_LOOPBACK_ONLY"],
        max_emails=config.get("MAIL_MAX_EMAILS"),
        ca_file=config.get("MAIL_CA_FILE"),
    )


def deliver_appeals(appeal_ids: list[int]) -> dict[str, int]:
    """Send a batch of appeals to their addressees."""
    relay = relay_settings()
    redis = rq.connection()
    return runner.deliver(
        [int(i) for i in appeal_ids],
        store=runner.Batch(_job_id(), Journal(redis)),
        transport=connection(relay),
        compose=runner.AppealComposer(relay),
        pacer=Pacer(redis, pacing_rules()),
        timezone_of=lambda slug: get_campaign(slug).to.timezone,
    )


def send_confirmations(appeal_ids: list[int]) -> dict[str, int]:
    """Send supporters their confirmation links (or a notice). Never paced."""
    relay = relay_settings()
    return confirmations.send(
        [int(i) for i in appeal_ids],
        job_id=_job_id(),
        relay=relay,
        transport=connection(relay),
        limit=confirmations.daily_limit(rq.connection()),
    )


def send_receipts(appeal_ids: list[int]) -> dict[str, int]:
    """Send supporters the receipt of an appeal their main addressee accepted. Never paced."""
    relay = relay_settings()
    return receipts.send([int(i) for i in appeal_ids], relay=relay, transport=connection(relay))
