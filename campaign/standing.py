"""Whether a campaign takes appeals now: open, paused for a while, or closed for good.

An admin pauses a campaign (no new appeals for now; what is queued still goes) or
closes it, by hand or from its deadline on (``close_at_deadline``). An open campaign
past its deadline still takes appeals and shows the Urgent Action's notice ("check
with your section office") with the section office's contact for the visitor's
country, from ``section_contacts``: ``{"*": text, "<ISO country>": text}``.

An appeal written before its campaign closed and confirmed after it is not sent: the
organisers closed the campaign because appeals should stop (the person was released,
the decision was taken), and its writer is told so on the confirm page. A paused
campaign still lets a supporter confirm an appeal it took before the pause.
"""

from __future__ import annotations

from datetime import date

import pycountry

from .campaigns import Campaign
from .exceptions import InvalidInput
from .models import CampaignOption

OPEN = "open"
"""Takes appeals (past its deadline too, unless it closes there)."""
PAUSED = "paused"
"""Takes no new appeals for now."""
CLOSED = "closed"
"""Takes no appeals any more, and confirms none."""

PAUSED_RETRY_AFTER = 3600
"""Seconds the API tells a client to wait (``Retry-After``) before trying a paused
campaign again: a pause is the organisers' decision, not a matter of seconds."""

ANY_COUNTRY = "*"
CONTACT_MAX = 500
"""Characters of one section office's contact."""


def today() -> date:
    """The day deadlines are read against (the server's, as everywhere else)."""
    return date.today()


def state_of(campaign: Campaign, option: CampaignOption, on: date | None = None) -> str:
    if option.closed or (option.close_at_deadline and campaign.past_deadline(on or today())):
        return CLOSED
    if option.paused:
        return PAUSED
    return OPEN


def section_contact(option: CampaignOption, country: str | None) -> str:
    """The section office to ask, for a visitor from ``country``, else the default one."""
    contacts = option.section_contacts if isinstance(option.section_contacts, dict) else {}
    if country and contacts.get(country.upper()):
        return str(contacts[country.upper()])
    return str(contacts.get(ANY_COUNTRY) or "")


def visitor_country(asked: str | None, accept_languages: list[str]) -> str | None:
    """The country a visitor chose (``?country=``), else the region of their browser's
    first language with one (``en-GB`` → GB); None if neither names a country."""
    regions = (code.replace("_", "-").partition("-")[2] for code in accept_languages)
    for candidate in [(asked or "")[:8], *regions]:
        code = candidate.strip().upper()
        if len(code) == 2 and pycountry.countries.get(alpha_2=code) is not None:
            return code
    return None


def parse_contacts(text: str) -> dict[str, str]:
    """The admin's text, one office a line: ``*: contact`` for everyone, ``GB: contact``
    for visitors from one country. Raises :class:`InvalidInput` naming the bad line."""
    contacts: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        code, colon, contact = line.partition(":")
        code, contact = code.strip().upper(), " ".join(contact.split())
        if not colon or not contact:
            problem = "write it as 'GB: the office's contact' (or '*: …' for everyone)"
        elif code != ANY_COUNTRY and (
            len(code) != 2 or pycountry.countries.get(alpha_2=code) is None
        ):
            problem = f"{code[:10]!r} is not a two-letter country code or '*'"
        elif len(contact) > CONTACT_MAX:
            problem = f"at most {CONTACT_MAX} characters"
        elif code in contacts:
            problem = f"{code} is given twice"
        else:
            contacts[code] = contact
            continue
        raise InvalidInput({"section_contacts": f"Line {number}: {problem}."})
    return contacts


def format_contacts(contacts: dict[str, str] | None) -> str:
    """The stored contacts as the admin edits them: the default one first."""
    if not isinstance(contacts, dict):
        return ""
    codes = sorted(contacts, key=lambda c: (c != ANY_COUNTRY, c))
    return "\n".join(f"{code}: {contacts[code]}" for code in codes)
