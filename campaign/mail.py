"""The two kinds of mail the application sends, ready for the relay.

* the appeal, from "<supporter> via <org>" <org sender>, Reply-To the supporter,
  To the campaign's main addressee, Cc every copy addressee with an e-mail;
* the confirmation request to the supporter, with a link to confirm.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, url_for

from . import mime
from .campaigns import get_campaign
from .letters import letter_for, letters_env
from .models import Appeal, Diplomat
from .settings import RelaySettings


@dataclass(frozen=True)
class Outgoing:
    """A message and its envelope."""

    envelope_from: str
    recipients: list[str]
    data: bytes
    message_id: str


def sender_domain(relay: RelaySettings) -> str:
    return relay.sender.rpartition("@")[2] or "localhost"


def appeal_message(
    appeal: Appeal, relay: RelaySettings, diplomats: list[Diplomat] | None = None
) -> Outgoing:
    letter = letter_for(get_campaign(appeal.campaign), appeal, relay.org_name, diplomats)
    message_id = mime.make_message_id(sender_domain(relay))
    data = mime.build(
        sender=(f"{appeal.name} via {relay.org_name}", relay.sender),
        reply_to=(appeal.name, appeal.email),
        to=[(r.name, r.email) for r in letter.to],
        cc=[(r.name, r.email) for r in letter.cc],
        subject=letter.subject,
        text=letter.text,
        html=letter.html,
        message_id=message_id,
    )
    recipients = [r.email for r in (*letter.to, *letter.cc)]
    return Outgoing(relay.sender, recipients, data, message_id)


def confirm_url(token: str) -> str:
    """The link for the supporter's mail; built from PUBLIC_URL as workers have no request."""
    with current_app.test_request_context(base_url=current_app.config["PUBLIC_URL"]):
        return url_for("public.confirm", token=token, _external=True)


def confirmation_message(appeal: Appeal, token: str, relay: RelaySettings) -> Outgoing:
    campaign = get_campaign(appeal.campaign)
    letter = letter_for(campaign, appeal, relay.org_name)
    env = letters_env()
    context = {
        "appeal": appeal,
        "campaign": campaign,
        "letter": letter,
        "confirm_url": confirm_url(token),
        "org_name": relay.org_name,
        "language": appeal.language,
    }

    def render(part: str) -> str:
        # The supporter's language if we have the wording, else English.
        names = [f"email/confirmation/{appeal.language}/{part}", f"email/confirmation/en/{part}"]
        return env.select_template(names).render(context)

    message_id = mime.make_message_id(sender_domain(relay))
    data = mime.build(
        sender=(relay.org_name, relay.sender),
        reply_to=None,
        to=[(appeal.name, appeal.email)],
        cc=[],
        subject=" ".join(render("subject.txt").split()),
        text=render("body.txt"),
        html=render("body.html"),
        message_id=message_id,
    )
    return Outgoing(relay.sender, [appeal.email], data, message_id)
