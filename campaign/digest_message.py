"""The digest's message: the letter once, every supporter's name, country and sentence,
and the same as a CSV attachment (:mod:`campaign.digests` sends it).

Everything a supporter typed is cleaned before it stands among others' words: no
control characters, no direction overrides; in HTML it is escaped, in the CSV a cell
that a spreadsheet would run is defused.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from flask import current_app
from flask_babel import force_locale
from markupsafe import Markup, escape

from . import dkim, mime
from .campaigns import Campaign
from .i18n import DEFAULT, supported
from .mail import Outgoing
from .settings import RelaySettings

if TYPE_CHECKING:
    from .digests import Target


# --- the message -----------------------------------------------------------------------------

_HIDDEN = re.compile("[\u202a-\u202e\u2066-\u2069\u200b\ufeff]")
"""Bidirectional overrides and isolates, zero-width space, BOM: they reorder or hide
text around them, so a name could disguise the next line."""

FORMULA = ("=", "+", "-", "@", "\t", "\r")
"""How a spreadsheet cell that a program would run begins (CSV injection)."""


def clean(value: str | None, *, lines: bool = False) -> str:
    """Text a supporter typed, safe to show among others': no control characters (no
    CR or LF at all in a name), no direction overrides, Unicode normalised (NFC)."""
    value = unicodedata.normalize("NFC", value or "")
    value = value.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")
    value = _HIDDEN.sub("", value.replace("\u2029", "\n"))
    kept = []
    for char in value:
        if char == "\n":
            kept.append("\n" if lines else " ")
        elif unicodedata.category(char) == "Cc":
            kept.append(" ")
        else:
            kept.append(char)
    out = "".join(kept)
    if lines:
        return "\n".join(line.strip() for line in out.strip().split("\n"))
    return " ".join(out.split())


def spreadsheet_safe(value: str) -> str:
    """A CSV cell that no spreadsheet takes for a formula."""
    return "'" + value if value.startswith(FORMULA) else value


@dataclass(frozen=True)
class Supporter:
    appeal_id: int
    name: str
    country: str
    country_name: str
    sentence: str
    confirmed_at: datetime | None

    @property
    def sentence_lines(self) -> list[str]:
        return self.sentence.split("\n") if self.sentence else []

    def size(self) -> int:
        """Roughly the bytes this supporter adds to a message (text, HTML and CSV,
        encoded)."""
        return 4 * len(f"{self.name}{self.country_name}{self.sentence}".encode()) + 300


@dataclass(frozen=True)
class NeutralLetter:
    """The campaign's letter with nobody's name: what every supporter of a digest signs."""

    language: str
    subject: str
    text: str
    html: Markup


def letter_language(campaign: Campaign) -> str:
    """The targets' language: the campaign's copy language, else its first."""
    return campaign.copy_language or campaign.languages[0]


def neutral_letter(campaign: Campaign) -> NeutralLetter:
    """The letter in the targets' language, without a signature: one phrasing for
    every digest of the campaign."""
    from .letters import _versions  # the letter's pieces, which a digest joins its own way

    language = letter_language(campaign)
    subject, version, _ = _versions(
        campaign,
        name="",
        language=language,
        country="XX",
        message=None,
        seed=f"digest:{campaign.slug}",
        diplomats=[],
    )
    parts = [version.salutation, *(p.text for p in version.paragraphs), version.closing]
    html = [f"<p>{escape(version.salutation)}</p>"]
    html += [f"<p>{p.html}</p>" for p in version.paragraphs]
    html.append(f"<p>{escape(version.closing)}</p>")
    if version.copies:
        parts.append(f"{version.copies_label} {version.copies}")
        html.append(f"<p>{escape(version.copies_label)} {escape(version.copies)}</p>")
    return NeutralLetter(
        language,
        subject,
        "\n\n".join(parts) + "\n",
        Markup("\n".join(html)),  # noqa: S704 - every piece escaped above
    )


def csv_attachment(supporters: list[Supporter]) -> bytes:
    """UTF-8 with a BOM (so that spreadsheet programs read it as UTF-8), one row each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["name", "country", "sentence", "confirmed_at"])
    for s in supporters:
        confirmed = s.confirmed_at.astimezone(UTC).isoformat() if s.confirmed_at else ""
        writer.writerow(
            [spreadsheet_safe(s.name), spreadsheet_safe(s.country_name)]
            + [spreadsheet_safe(s.sentence), confirmed]
        )
    return out.getvalue().encode("utf-8-sig")


def attach(data: bytes, filename: str, content_type: str, payload: bytes) -> bytes:
    """``data`` (a message from :func:`campaign.mime.build`) as the first part of a
    ``multipart/mixed``, with ``payload`` attached in base64. ``filename`` is ours
    (ASCII letters, digits, dots and dashes), never a supporter's."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", filename):
        raise ValueError(f"not a safe attachment name: {filename!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    inner = [line for line in lines if line.lower().startswith(b"content-")]
    outer = [line for line in lines if not line.lower().startswith(b"content-")]
    boundary = "=_mixed_" + hashlib.sha256(data[:4096] + payload[:4096]).hexdigest()[:24]
    outer.append(f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode("ascii"))
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return b"".join(
        (
            b"\r\n".join(outer),
            b"\r\n\r\n",
            f"--{boundary}\r\n".encode("ascii"),
            b"\r\n".join(inner),
            b"\r\n\r\n",
            body,
            f"\r\n--{boundary}\r\n".encode("ascii"),
            f'Content-Type: {content_type}; name="{filename}"\r\n'.encode("ascii"),
            f'Content-Disposition: attachment; filename="{filename}"\r\n'.encode("ascii"),
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            encoded,
            f"--{boundary}--\r\n".encode("ascii"),
        )
    )


def digest_message(
    campaign: Campaign,
    target: Target,
    supporters: list[Supporter],
    *,
    relay: RelaySettings,
    total: int,
    part: int,
    parts: int,
    day: date,
    message_id: str,
) -> Outgoing:
    """One digest to one target, in the targets' language."""
    letter = neutral_letter(campaign)
    locale = supported(letter.language) or DEFAULT
    env = current_app.jinja_env
    context = {
        "campaign": campaign,
        "title": campaign.text("title", letter.language),
        "letter": letter,
        "target": target,
        "supporters": supporters,
        "total": total,
        "count": len(supporters),
        "part": part,
        "parts": parts,
        "day": day,
        "org_name": relay.org_name,
        "language": letter.language,
    }
    with force_locale(locale):

        def render(name: str) -> str:
            return env.get_template(f"email/digest/{name}").render(context)

        subject = " ".join(render("subject.txt").split())
        text_body, html_body = render("body.txt"), render("body.html")
    data = mime.build(
        sender=(relay.org_name, relay.sender),
        reply_to=None,
        to=[(target.name, target.address)],
        cc=[],
        subject=subject,
        text=text_body,
        html=html_body,
        message_id=message_id,
    )
    suffix = f"-{part}" if parts > 1 else ""
    name = f"supporters-{campaign.slug}-{day.isoformat()}{suffix}.csv"
    data = attach(data, name[-100:], 'text/csv; charset="utf-8"', csv_attachment(supporters))
    return Outgoing(
        relay.sender, [target.address], dkim.sign(data), message_id, [(target.name, target.address)]
    )


def split(supporters: list[Supporter], most: int, max_bytes: int) -> list[list[Supporter]]:
    """Parts of at most ``most`` supporters and about ``max_bytes`` each."""
    parts: list[list[Supporter]] = []
    current: list[Supporter] = []
    size = 0
    for s in supporters:
        if current and (len(current) >= most or size + s.size() > max_bytes):
            parts.append(current)
            current, size = [], 0
        current.append(s)
        size += s.size()
    if current:
        parts.append(current)
    return parts
