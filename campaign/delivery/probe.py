"""The relay connection check: what the relay says at each step, without sending.

Connect, EHLO, STARTTLS (or TLS from the first byte), the certificate it shows
(subject, issuer, expiry, and whether it is trusted), AUTH, then QUIT. No MAIL FROM is
ever sent. The guards are the transport's: loopback only where configured, no password
over a connection without TLS (except to loopback), certificates verified against the
system's trust store plus ``MAIL_CA_FILE``.

A relay that could not be reached at all (refused, silent, unknown host) is reported in
the same words whatever the cause, so that the admin screen tells nothing about the
network beyond the relay; what the relay itself says, once it has greeted us, is shown.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509

from ..settings import RelaySettings
from .transport import RelayConnection, SessionLost, is_loopback

UNREACHABLE = "could not be reached, or refused the connection"

DETAIL_MAX = 300
"""Characters kept of anything the relay says (a hostile relay may say a lot)."""

EHLO_LINES = 12


@dataclass(frozen=True)
class Step:
    """One step of the check: ``ok`` is None for a step that did not apply."""

    name: str
    ok: bool | None
    detail: str


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    # What went wrong, in the server's log only (it may name hosts and ports).
    log_detail: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok is not False for s in self.steps)

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        self.steps.append(Step(name, ok, _short(detail)))

    def as_data(self) -> list[list[object]]:
        return [[s.name, s.ok, s.detail] for s in self.steps]


def _short(text: str) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"


def _ehlo_text(host: smtplib.SMTP) -> str:
    lines = (host.ehlo_resp or b"").decode("utf-8", "replace").splitlines()
    shown = lines[:EHLO_LINES] + (["…"] if len(lines) > EHLO_LINES else [])
    return "; ".join(line.strip() for line in shown)


def _names(name: x509.Name) -> str:
    return ", ".join(f"{a.rfc4514_attribute_name}={a.value}" for a in name) or "(empty)"


def _certificate(sock: ssl.SSLSocket | socket.socket | None) -> str:
    """Subject, issuer and expiry of the certificate the relay showed."""
    if not isinstance(sock, ssl.SSLSocket):
        return "none"
    der = sock.getpeercert(binary_form=True)
    if not der:
        return "none shown"
    return describe_certificate(der)


def describe_certificate(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    expires = cert.not_valid_after_utc
    days = (expires - datetime.now(UTC)).days
    when = f"expires {expires:%Y-%m-%d %H:%M} UTC"
    when += f" (in {days} days)" if days >= 0 else " (EXPIRED)"
    return f"subject {_names(cert.subject)}; issuer {_names(cert.issuer)}; {when}"


def _unverified_certificate(relay: RelaySettings, timeout: float) -> str:
    """The certificate a relay showed that failed verification, fetched again without
    verifying, to say what it is. Nothing but the handshake is sent."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        if relay.security == "ssl":
            host: smtplib.SMTP = smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=timeout, context=context
            )
        else:
            host = smtplib.SMTP(relay.host, relay.port, timeout=timeout)
            host.ehlo()
            host.starttls(context=context)
        try:
            return _certificate(host.sock)
        finally:
            host.close()
    except (smtplib.SMTPException, OSError, ValueError):
        return "could not be read"


def check(connection: RelayConnection) -> Report:
    """Run the check over ``connection``'s settings and guards; sends no message."""
    relay = connection.relay
    report = Report()
    loopback = is_loopback(relay.host)
    if connection.loopback_only and not loopback:
        report.add("connect", False, "refused here: not on loopback (MAIL_LOOPBACK_ONLY)")
        return report
    credentials = bool(relay.username and relay.password)
    if credentials and relay.security == "none" and not loopback:
        report.add("connect", False, "refused here: a password is never sent without TLS")
        return report
    context = connection._tls_context()
    step = "connect"
    host: smtplib.SMTP | None = None
    try:
        if relay.security == "ssl":
            host = smtplib.SMTP_SSL(relay.host, relay.port, timeout=relay.timeout, context=context)
        else:
            host = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
        report.add("connect", True, f"{relay.host}:{relay.port}")
        if relay.security == "ssl":
            report.add("TLS", True, _tls_text(host.sock))
            report.add("certificate", True, _certificate(host.sock) + "; trusted")
        step = "EHLO"
        code, _ = host.ehlo()
        report.add("EHLO", code == 250, _ehlo_text(host))
        if relay.security == "starttls":
            step = "STARTTLS"
            code, reply = host.starttls(context=context)
            report.add(
                "STARTTLS",
                True,
                f"{code} {reply.decode('utf-8', 'replace')}; " + _tls_text(host.sock),
            )
            report.add("certificate", True, _certificate(host.sock) + "; trusted")
            step = "EHLO"
            host.ehlo()
            report.add("EHLO after STARTTLS", True, _ehlo_text(host))
        elif relay.security == "none":
            report.add("STARTTLS", None, "not used (security: none)")
        step = "AUTH"
        if credentials:
            code, reply = host.login(relay.username or "", relay.password or "")
            report.add("AUTH", True, f"{code} {reply.decode('utf-8', 'replace')}")
        else:
            offered = host.esmtp_features.get("auth", "").strip()
            report.add(
                "AUTH",
                None,
                "not used (no user name and password)"
                + (f"; the relay offers {offered}" if offered else ""),
            )
    except ssl.SSLCertVerificationError as exc:
        tls_step = "TLS" if relay.security == "ssl" else "STARTTLS"
        if step == "connect" and relay.security == "ssl":
            report.add("connect", True, f"{relay.host}:{relay.port}")
        report.add(tls_step, False, f"certificate not trusted: {exc.verify_message}")
        report.add("certificate", False, _unverified_certificate(relay, relay.timeout))
        report.log_detail = str(exc)
    except smtplib.SMTPResponseException as exc:
        report.log_detail = f"{step}: {exc.smtp_code} {exc.smtp_error!r}"
        if step == "connect":
            report.add("connect", False, UNREACHABLE)
        else:
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            report.add(step, False, f"{exc.smtp_code} {text}")
    except (smtplib.SMTPException, OSError) as exc:
        report.log_detail = f"{step}: {SessionLost.of(exc, relay.timeout).reason}"
        if step == "connect":
            report.add("connect", False, UNREACHABLE)
        else:
            report.add(step, False, SessionLost.of(exc, relay.timeout).reason)
    finally:
        if host is not None:
            try:
                host.quit()
            except (smtplib.SMTPException, OSError):
                host.close()
    return report


def _tls_text(sock: ssl.SSLSocket | socket.socket | None) -> str:
    if not isinstance(sock, ssl.SSLSocket):
        return "no TLS"
    cipher = sock.cipher()
    return f"{sock.version()}, {cipher[0] if cipher else 'unknown cipher'}"
