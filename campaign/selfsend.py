"""Send it yourself: the supporter's letter as links that open their own mail program.

Beside the appeal the organisation sends, the preview and the confirmation page offer
three links, each filled in with the letter's recipients (To and Cc, as the relay
would send them), its subject and its text:

- ``mailto:`` (RFC 6068), for the mail program the device has;
- Gmail's compose page, and Outlook on the web's.

Everything the supporter typed (name, sentence) is in the text, so every value is
percent-encoded whole, as UTF-8, with nothing left bare but ASCII letters, digits and
``-._~``: an ``&``, ``#``, ``%``, ``?`` or line break in a sentence stays text and can
neither end a field nor add one (``&bcc=`` in a sentence is a sentence). The subject
is one line (RFC 6068: no line breaks outside the body). Addresses are checked to be
plain ``local@domain`` before they go into a link; one that is not is left out and
named, rather than encoded into something a mail program might split.

A link longer than its client takes fails, often silently (a truncated body, or no
compose window at all). Past the limit below, a link carries the recipients and the
subject only, and the page asks to copy the letter first and paste it in.

Reports ("I sent it myself") are :class:`~campaign.models.SelfReport` rows, counted
as "self-sent (reported)": what the supporter told us, never delivered mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy import func, select

from .db import db
from .letters import Letter, Recipient
from .models import Appeal, SelfReport
from .tokens import token_hash

MAILTO, GMAIL, OUTLOOK, COPY = "mailto", "gmail", "outlook", "copy"
LINKS = (MAILTO, GMAIL, OUTLOOK)
"""The channels that are links, in the order the page shows them."""
CHANNELS = (*LINKS, COPY)
"""Every way a supporter may report sending: a link, or the copied letter."""

MAILTO_MAX = 2000
"""Longest ``mailto:`` link that carries the letter. RFC 6068 sets no limit, but the
browser hands the link to the operating system's mail program, and that hand-off has
been the narrow part: Chromium and Firefox long refused external-protocol URLs over
2,048 characters on Windows (``kMaxUrlLength = 2048`` in Chromium's
``platform_util_win.cc``, after Mozilla's ``nsOSHelperAppService.cpp``: "2K is
safe"); Outlook for Windows is reported to take 2,046 and Chrome to fail "right
around 2000" (https://stackoverflow.com/questions/4473959). 2,000 stays under all."""

WEBMAIL_MAX = 8000
"""Longest Gmail or Outlook on the web link that carries the letter. Neither service
publishes a limit; RFC 9110 §4.1 recommends that every recipient take URIs of at
least 8,000 octets, and an 8,000-character body was measured to arrive whole in
Outlook on the web (its IIS front end answered 400 only past some 31,000:
https://github.com/InteractionDesignFoundation/add-event-to-calendar-docs,
``services/outlook-web.md``). A
signed-out user is sent through a sign-in page that carries the link along, so the
limit stays at the recommended minimum rather than at the measured maximum."""

GMAIL_COMPOSE = "https://mail.google.com/mail/"
"""Gmail's compose page: ``?view=cm&fs=1`` with ``to``, ``cc``, ``su`` (the subject)
and ``body``; undocumented by Google, in use for over a decade and still working
(https://til.simonwillison.net/google/gmail-compose-url, 2024). Gmail reads the query
as form data, so a raw ``+`` would be a space: it is always written ``%2B``."""

OUTLOOK_COMPOSE = "https://outlook.office.com/mail/deeplink/compose"
"""Outlook on the web's compose deep link, with ``to``, ``cc``, ``subject`` and
``body``: undocumented by Microsoft. ``to``, ``subject`` and ``body`` are widely
used; reports on ``cc`` conflict (some find it dropped:
https://gist.github.com/miwebguy/2e805e343e0d434f06f2194b92b925d8), so the page names
every recipient and asks to check them."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_LOCAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+'-]*\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


@dataclass(frozen=True)
class Link:
    """One way to open the letter in a mail program."""

    channel: str
    href: str
    full: bool
    """It carries the letter's text; if not, only the recipients and the subject,
    and the letter is to be copied and pasted."""


@dataclass(frozen=True)
class SelfSend:
    """What the "send it yourself" part of a page shows for one letter."""

    links: tuple[Link, ...]
    subject: str
    text: str
    to: tuple[Recipient, ...]
    cc: tuple[Recipient, ...]
    left_out: tuple[Recipient, ...] = ()
    """Recipients whose address is not plain enough to put in a link."""

    @property
    def copy_first(self) -> bool:
        """Some link is too long for its client with the text: copy the letter first."""
        return any(not link.full for link in self.links)

    def link(self, channel: str) -> Link:
        return next(link for link in self.links if link.channel == channel)


# --- Encoding ----------------------------------------------------------------------------


def encode(value: str) -> str:
    """Percent-encode every byte of the UTF-8 text but ASCII letters, digits and
    ``-._~``. A lone surrogate (never well-formed text) becomes U+FFFD."""
    return quote(_SURROGATE.sub("\ufffd", value).encode("utf-8"), safe="")


def one_line(value: str) -> str:
    """The subject as one line: its line breaks (and other controls) become spaces."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", value).strip()


def lines(value: str, newline: str) -> str:
    """The body with every line break (CRLF, CR or LF) written as ``newline``."""
    return re.sub(r"\r\n|\r|\n", newline, value)


def plain_address(address: str) -> str | None:
    """``local@domain`` as a link may carry it (the domain in IDNA), or None for an
    address with anything a mail program might read as a separator, a header or a
    second address (``,`` ``;`` ``?`` ``&`` ``%`` quotes, spaces, a display name)."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not _LOCAL.match(local) or len(address) > 254:
        return None
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    return f"{local}@{domain.lower()}"


def _addresses(recipients: Iterable[Recipient]) -> tuple[list[str], list[Recipient]]:
    kept, left_out = [], []
    for r in recipients:
        address = plain_address(r.email)
        if address is None:
            left_out.append(r)
        else:
            kept.append(address)
    return kept, left_out


def _address_list(addresses: list[str]) -> str:
    # "+" is a space to form-decoding webmail, so it is %2B; "@" and the "," between
    # addresses stay as RFC 6068 writes them.
    return ",".join(quote(a, safe="@") for a in addresses)


# --- Links -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    """How one mail program takes a message in a link."""

    base: str
    fixed: tuple[str, ...]
    """Fields that come first, always the same."""
    to_in_path: bool
    """``mailto:`` puts the To addresses in the path (RFC 6068 §2: some programs
    ignore a ``to`` field); the webmail pages take a ``to`` field."""
    subject: str
    newline: str
    limit: int


CLIENTS = {
    # RFC 6068: line breaks in the body MUST be %0D%0A.
    MAILTO: Client("mailto:", (), True, "subject", "\r\n", MAILTO_MAX),
    GMAIL: Client(GMAIL_COMPOSE, ("view=cm", "fs=1"), False, "su", "\n", WEBMAIL_MAX),
    OUTLOOK: Client(OUTLOOK_COMPOSE, (), False, "subject", "\n", WEBMAIL_MAX),
}


def compose_url(channel: str, to: list[str], cc: list[str], subject: str, body: str | None) -> str:
    """The link of ``channel`` for this message; without ``body`` (None), the
    recipients and the subject only."""
    client = CLIENTS[channel]
    fields = list(client.fixed)
    if not client.to_in_path:
        fields.append(f"to={_address_list(to)}")
    if cc:
        fields.append(f"cc={_address_list(cc)}")
    fields.append(f"{client.subject}={encode(one_line(subject))}")
    if body is not None:
        fields.append(f"body={encode(lines(body, client.newline))}")
    path = _address_list(to) if client.to_in_path else ""
    return f"{client.base}{path}?{'&'.join(fields)}"


def links_for(letter: Letter) -> SelfSend:
    """The three links for this letter: each with the text if it fits its client,
    else with the recipients and the subject only (:attr:`Link.full` False)."""
    to, left_to = _addresses(letter.to)
    cc, left_cc = _addresses(letter.cc)
    links = []
    for channel in LINKS:
        href = compose_url(channel, to, cc, letter.subject, letter.text)
        full = len(href) <= CLIENTS[channel].limit
        if not full:
            href = compose_url(channel, to, cc, letter.subject, None)
        links.append(Link(channel, href, full))
    return SelfSend(
        links=tuple(links),
        subject=one_line(letter.subject),
        text=letter.text,
        to=letter.to,
        cc=letter.cc,
        left_out=(*left_to, *left_cc),
    )


# --- Reports -----------------------------------------------------------------------------


def appeal_for(token: str, slug: str) -> tuple[int, str] | None:
    """(id, status) of the appeal whose confirmation link carries ``token``, if it is
    this campaign's; waiting for confirmation or not (a supporter may send both ways,
    and the console shows both)."""
    if not token or len(token) > 128:
        return None
    row = db.session.execute(
        select(Appeal.id, Appeal.status).where(
            Appeal.confirm_token_hash == token_hash(token), Appeal.campaign == slug
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def record(slug: str, channel: str, appeal_id: int | None = None) -> bool:
    """Record a supporter's word that they sent the letter themselves; False if this
    appeal had reported it already (one report per appeal).
    It does not touch the appeal: an unconfirmed one is never sent unless its owner
    presses the button, and a confirmed one goes as it would."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    if appeal_id is not None and db.session.scalar(
        select(SelfReport.id).filter_by(appeal_id=appeal_id).limit(1)
    ):
        return False
    db.session.add(SelfReport(campaign=slug, appeal_id=appeal_id, channel=channel))
    db.session.commit()
    return True


def counts() -> dict[str, tuple[int, int]]:
    """Per campaign: (self-sent reports, of which from an appeal that also went
    through us or is on its way), in one query."""
    also_ours = func.count(Appeal.id).filter(Appeal.confirmed_at.is_not(None))
    rows = db.session.execute(
        select(SelfReport.campaign, func.count(SelfReport.id), also_ours)
        .outerjoin(Appeal, Appeal.id == SelfReport.appeal_id)
        .group_by(SelfReport.campaign)
    )
    return {slug: (int(n), int(both)) for slug, n, both in rows}
