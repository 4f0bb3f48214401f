"""The two kinds of mail the application sends, ready for the relay.

* the appeal, from "<supporter> via <org>" <org sender>, Reply-To the supporter,
  To the campaign's main addressee, Cc every copy addressee with an e-mail;
* the confirmation request to the supporter, with a link to confirm.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from flask_babel import get_translations

# Jinja's own makers of the "newstyle" gettext calls (what install_gettext_callables
# applies); tests/test_i18n.py checks that mail reads the same as through Flask-Babel's.
from jinja2.ext import _make_new_gettext, _make_new_ngettext
from werkzeug.routing import MapAdapter

from . import dkim, mime
from .campaigns import get_campaign
from .forms import SEND_MY_APPEAL
from .i18n import current_language
from .letters import letter_for
from .models import Diplomat
from .settings import RelaySettings

Mailbox = tuple[str, str]
"""(display name, address)"""


@dataclass(frozen=True)
class Outgoing:
    """A message and its envelope."""

    envelope_from: str
    recipients: list[str]
    data: bytes
    message_id: str
    to: list[Mailbox] = field(default_factory=list)
    cc: list[Mailbox] = field(default_factory=list)


def sender_domain(relay: RelaySettings) -> str:
    return relay.sender.rpartition("@")[2] or "localhost"


def appeal_message_id(public_id: str, relay: RelaySettings) -> str:
    """The appeal's Message-ID: the same on every try, and revealing nothing of the
    appeal (not even its public id) to the people it goes to."""
    key = current_app.secret_key.encode()  # type: ignore[union-attr]
    digest = hmac.new(key, b"message-id:" + public_id.encode(), hashlib.sha256).hexdigest()
    return f"<{digest[:32]}@{sender_domain(relay)}>"


def appeal_message(
    appeal: Any,
    relay: RelaySettings,
    *,
    diplomats: list[Diplomat] | None = None,
    message_id: str | None = None,
    addressees: tuple[list[Mailbox], list[Mailbox]] | None = None,
) -> Outgoing:
    """The appeal as the relay gets it. ``addressees`` (To, Cc) replace the letter's own
    on a retry, so that the headers name everyone the first try named."""
    letter = letter_for(get_campaign(appeal.campaign), appeal, relay.org_name, diplomats)
    if addressees is None:
        seen: set[str] = set()
        to = _unique([(r.name, r.email) for r in letter.to], seen)
        cc = _unique([(r.name, r.email) for r in letter.cc], seen)
    else:
        to, cc = addressees
    message_id = message_id or appeal_message_id(appeal.public_id, relay)
    written = appeal.confirmed_at or appeal.created_at
    data = mime.build(
        sender=(f"{appeal.name} via {relay.org_name}", relay.sender),
        reply_to=(appeal.name, appeal.email),
        to=to,
        cc=cc,
        subject=letter.subject,
        text=letter.text,
        html=letter.html,
        message_id=message_id,
        # When the supporter confirmed: the moment the letter was complete (RFC 5322
        # 3.6.1), and the same on every try.
        date=written.timestamp() if written else None,
    )
    recipients = [address for _, address in (*to, *cc)]
    return Outgoing(relay.sender, recipients, dkim.sign(data), message_id, to, cc)


def _unique(mailboxes: list[Mailbox], seen: set[str]) -> list[Mailbox]:
    """Each address once: one copy per recipient, even if two addressees share it."""
    out = []
    for name, address in mailboxes:
        if address not in seen:
            seen.add(address)
            out.append((name, address))
    return out


TEST_MARK = "[TEST] "
"""How a test-mode appeal's subject begins (:mod:`campaign.sending`)."""

_REPLACED_IN_TEST = (b"to", b"cc", b"bcc")


def staff_copy(message: Outgoing, staff: str, instead_of: list[str]) -> Outgoing:
    """Test mode: the same letter to ``staff`` and nobody else. The envelope and the To
    header name that address alone, Cc goes, the subject starts with ``[TEST] `` and an
    ``X-Appeal-Test`` header lists the addressees it stands in for. The body is the
    letter as it is (it names its addressees: that is what is being tested)."""
    # The addressees' signature goes: the staff copy is signed anew below.
    head, _, body = dkim.strip_signature(message.data).partition(b"\r\n\r\n")
    lines: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):  # a folded header's next line
            if not dropping:
                lines.append(line)
            continue
        name = line.partition(b":")[0].strip().lower()
        dropping = name in _REPLACED_IN_TEST
        if dropping:
            continue
        if name == b"subject":
            line = b"Subject: " + TEST_MARK.encode() + line[len(b"Subject:") :].lstrip()
        lines.append(line)
    lines.insert(1, b"To: " + staff.encode("ascii", "replace"))  # after From, as mime.build
    stands_for = mime.address_list([("", a) for a in instead_of], len("X-Appeal-Test: for "))
    lines.append(b"X-Appeal-Test: for " + stands_for.encode("ascii", "replace"))
    data = dkim.sign(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    return Outgoing(message.envelope_from, [staff], data, message.message_id, [("", staff)], [])


def public_urls() -> MapAdapter:
    """The app's routes bound to ``PUBLIC_URL`` (scheme, host and any path prefix), built
    once per app and address: workers have no request to build links from, and a
    request context made for each link cost a sixth of a confirmation mail."""
    base = current_app.config["PUBLIC_URL"]
    bound = current_app.extensions.setdefault("public_urls", {})
    adapter = bound.get(base)
    if adapter is None:
        parts = urlsplit(base)
        adapter = bound[base] = current_app.url_map.bind(
            parts.netloc, script_name=parts.path or "/", url_scheme=parts.scheme or "http"
        )
    return adapter


def confirm_url(token: str) -> str:
    """The link for the supporter's mail."""
    return public_urls().build("public.confirm", {"token": token}, force_external=True)


def status_url(public_id: str, language: str | None = None) -> str:
    """The appeal's status page, for its owner's mail (opened in ``language``)."""
    values = {"public_id": public_id, "lang": language}
    return public_urls().build("public.status", values, force_external=True)


def catalogue_calls() -> dict[str, Any]:
    """``gettext`` and ``ngettext`` for a template's context, bound to the catalogue in
    force (the caller's :func:`flask_babel.force_locale`), and made as Jinja makes the
    ones Flask-Babel installs ("newstyle": the result autoescaped in HTML, then
    %-formatted). Those look the catalogue up again at every call, through the app
    and request contexts: in a confirmation mail's thirteen calls that was a third of
    the time to compose it. ``_`` calls whichever ``gettext`` the context has."""
    translations = get_translations()
    return {
        "gettext": _make_new_gettext(translations.ugettext),
        "ngettext": _make_new_ngettext(translations.ungettext),
    }


NAME_IN_SUPPORTER_MAIL = 60
"""Characters of the submitted name a supporter mail carries: the only thing in it that
whoever filled in the form chose, so that it can't carry anyone's message."""


def supporter_mail(
    appeal: Any, kind: str, relay: RelaySettings, to_name: str, **context: Any
) -> Outgoing:
    """A mail to the supporter: ``confirmation``, ``notice`` or ``receipt`` (the templates in
    ``templates/email/<kind>/``), in the interface language
    in force (the caller picks the supporter's with :func:`flask_babel.force_locale`),
    whatever the letter's language. One set of templates, worded through gettext."""
    campaign = get_campaign(appeal.campaign)
    # The app's environment; no request globals are used.
    env = current_app.jinja_env
    language = current_language()
    context.update(
        **catalogue_calls(),
        campaign=campaign,
        title=campaign.text("title", language),
        addressee=campaign.to.title_in(language),
        org_name=relay.org_name,
        language=language,
    )

    def render(part: str) -> str:
        return env.get_template(f"email/{kind}/{part}").render(context)

    message_id = mime.make_message_id(sender_domain(relay))
    data = mime.build(
        sender=(relay.org_name, relay.sender),
        reply_to=None,
        to=[(to_name, appeal.email)],
        cc=[],
        subject=" ".join(render("subject.txt").split()),
        text=render("body.txt"),
        html=render("body.html"),
        message_id=message_id,
    )
    return Outgoing(relay.sender, [appeal.email], dkim.sign(data), message_id)


def confirmation_message(appeal: Any, token: str, relay: RelaySettings) -> Outgoing:
    """The link to read and send the appeal. It carries the submitted name (cut short)
    and nothing else that was typed: not the letter, not the sentence."""
    name = appeal.name[:NAME_IN_SUPPORTER_MAIL]
    return supporter_mail(
        appeal,
        "confirmation",
        relay,
        name,
        name=name,
        confirm_url=confirm_url(token),
        status_url=status_url(appeal.public_id, current_language()),
        days=int(float(current_app.config["CONFIRM_TOKEN_DAYS"])),
        # The confirm page's button, named in the same words.
        button=str(SEND_MY_APPEAL),
    )


def notice_message(appeal: Any, relay: RelaySettings) -> Outgoing:
    """To an address submitted again after its appeal was confirmed: nothing typed at all."""
    return supporter_mail(appeal, "notice", relay, "", status=appeal.status)
