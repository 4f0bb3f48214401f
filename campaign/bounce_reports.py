"""The bounce address and the reports that come back to it.

An appeal's envelope sender is ``bounces+<token>@<domain>`` (VERP): the token is the
appeal's id and a signature, so a report names the appeal and nobody can forge one.
:func:`parse` reads a report: a delivery status notification (RFC 3464, or the usual
MTAs' own formats, with flufl.bounce), or an auto-reply that is no bounce.
:mod:`campaign.bounces` records what it says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses

from flask import current_app
from flufl.bounce import all_failures

HARD, SOFT = "hard", "soft"
"""The two kinds of bounce: the copy failed for good, or its delivery is delayed."""

AUTO_REPLY, OTHER = "auto_reply", "other"
"""What else a message in the bounce mailbox can be."""

MAC_LENGTH = 10
"""Base32 characters of the token's signature: 50 bits, in lower case (some MTAs
lower-case the local part)."""

_TOKEN = re.compile(rf"\+(\d{{1,12}}-[a-z2-7]{{{MAC_LENGTH}}})@", re.IGNORECASE)


# --- The bounce address ------------------------------------------------------------------


def _mac(appeal_id: int) -> str:
    key = current_app.secret_key.encode()  # type: ignore[union-attr]
    digest = hmac.new(key, b"bounce:%d" % appeal_id, hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii")[:MAC_LENGTH].lower()


def token_for(appeal_id: int) -> str:
    """The appeal's part of its bounce address: its id and a signature."""
    return f"{appeal_id}-{_mac(appeal_id)}"


def appeal_for(token: str) -> int | None:
    """The appeal a token names, if its signature is ours; else None."""
    number, _, mac = token.strip().lower().partition("-")
    if not number.isdigit() or len(number) > 12:
        return None
    appeal_id = int(number)
    return appeal_id if hmac.compare_digest(mac, _mac(appeal_id)) else None


def envelope_sender(appeal_id: int, bounce_address: str, sender_domain: str) -> str:
    """``local+token@domain`` from ``BOUNCE_ADDRESS`` (``bounces@org.example``, or just
    ``bounces`` for the relay sender's domain)."""
    local, _, domain = bounce_address.partition("@")
    return f"{local}+{token_for(appeal_id)}@{domain or sender_domain}"


# --- Reading one report ------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One address a report says failed."""

    address: str
    kind: str  # HARD or SOFT
    reason: str


@dataclass(frozen=True)
class Report:
    """One message from the bounce mailbox, as read."""

    report_id: str
    kind: str  # "bounce", AUTO_REPLY or OTHER
    failures: tuple[Failure, ...] = ()
    appeal_id: int | None = None  # from a verified token
    original_message_id: str | None = None  # the returned message's, if quoted
    subject: str = ""


_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic|matische)?[ -]?(reply|response|antwort|answer)|out of (the )?office"
    r"|ooo\b|away from (the )?office|on vacation|vacation|abwesenheit|absence"
    r"|fuera de la oficina|ausencia|respuesta autom[aá]tica|r[ée]ponse automatique"
    r"|risposta automatica|fuori (sede|ufficio)|resposta autom[aàá]tica|ausente"
    r"|fora de l'oficina|automatisch antwoord|afwezig)",
    re.IGNORECASE,
)
"""Subjects of out-of-office replies, in the campaigns' languages."""


def _subject(msg: Message) -> str:
    raw = msg.get("Subject", "")
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError, UnicodeError):
        return str(raw)


def _is_delivery_report(msg: Message) -> bool:
    if msg.get_content_type() == "multipart/report" or msg.get("X-Failed-Recipients"):
        return True
    if any(p.get_content_type() == "message/delivery-status" for p in msg.walk()):
        return True
    sender = " ".join(a for _, a in getaddresses(msg.get_all("From", []))).lower()
    return sender.startswith("mailer-daemon@") or "mailer-daemon" in sender


def is_auto_reply(msg: Message) -> bool:
    """An out-of-office or other responder's reply (RFC 3834 and what responders use)."""
    auto = msg.get("Auto-Submitted", "").strip().lower()
    if auto and not auto.startswith("no"):
        return True
    if msg.get("X-Autoreply") or msg.get("X-Autorespond") or msg.get("X-Autoresponder"):
        return True
    if msg.get("Precedence", "").strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(_subject(msg)))


def _report_id(msg: Message, raw: bytes) -> str:
    found = " ".join(str(msg.get("Message-ID", "")).split())
    return found[:255] if found else "sha256:" + hashlib.sha256(raw).hexdigest()


def _token(msg: Message, raw: bytes) -> int | None:
    """The appeal named by a verified token: in the headers that carry the address the
    report came to, else anywhere in it (the returned message's Return-Path)."""
    headers = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
    places = [v for h in headers for v in msg.get_all(h, [])]
    places.append(raw.decode("ascii", "replace"))
    for place in places:
        for token in _TOKEN.findall(str(place)):
            appeal_id = appeal_for(token)
            if appeal_id is not None:
                return appeal_id
    return None


_MESSAGE_ID = re.compile(r"^Message-ID:[ \t]*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)


def _original_message_id(msg: Message) -> str | None:
    """The Message-ID of the returned message, where the report quotes it."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message) and inner.get("Message-ID"):
                return str(inner["Message-ID"]).strip()
        elif kind in ("text/rfc822-headers", "text/plain") and (
            part is not msg or not msg.is_multipart()
        ):
            found = _MESSAGE_ID.search(_text(part))
            if found:
                return found.group(1)
    return None


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return str(part.get_payload())


def _dsn_reasons(msg: Message) -> dict[str, str]:
    """address → "Status Diagnostic-Code", from each per-recipient block of a DSN."""
    reasons: dict[str, str] = {}
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, Message):
                continue
            words = [block.get("Status", ""), block.get("Diagnostic-Code", "")]
            reason = " ".join(" ".join(str(w) for w in words).split())
            for header in ("Original-Recipient", "Final-Recipient"):
                value = str(block.get(header, ""))
                address = value.partition(";")[2].strip().strip("<>").lower()
                if address and reason:
                    reasons.setdefault(address, reason)
    return reasons


def _text_reason(msg: Message, address: str) -> str:
    """The lines under the address in a plain-text report (Exim's classic)."""
    for part in msg.walk():
        if part.get_content_type() != "text/plain":
            continue
        lines = _text(part).splitlines()
        for n, line in enumerate(lines):
            if line.strip().strip("<>:").lower() != address:
                continue
            indent = len(line) - len(line.lstrip())
            said = []
            for following in lines[n + 1 :]:
                if not following.strip() or len(following) - len(following.lstrip()) <= indent:
                    break
                said.append(following.strip())
            if said:
                return " ".join(said)
    return ""


def parse(raw: bytes) -> Report:
    """Read one message from the bounce mailbox."""
    msg = message_from_bytes(raw)
    report_id, subject = _report_id(msg, raw), _subject(msg)
    if not _is_delivery_report(msg) and is_auto_reply(msg):
        return Report(report_id, AUTO_REPLY, subject=subject)
    temporary, permanent = all_failures(msg)
    if not temporary and not permanent:
        return Report(report_id, OTHER, subject=subject)
    reasons = _dsn_reasons(msg)
    failures = []
    for kind, found in ((HARD, permanent), (SOFT, temporary - permanent)):
        for address in sorted(a.decode("ascii").lower() for a in found):
            reason = reasons.get(address) or _text_reason(msg, address) or subject
            failures.append(Failure(address, kind, reason[:2000]))
    return Report(
        report_id,
        "bounce",
        tuple(failures),
        _token(msg, raw),
        _original_message_id(msg),
        subject,
    )
