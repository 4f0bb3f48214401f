"""SMTP delivery: Flask-Mail's connection, wrapped so a worker can trust it.

The wrapper adds what Flask-Mail 0.10 lacks: a socket timeout, certificate
verification on STARTTLS and SSL, a loopback-only guard for tests and demos,
the relay's real reply when it drops the connection, and per-recipient
refusals as data.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from types import TracebackType

from flask_mail import Connection, _Mail

from .exceptions import RelayRefused
from .settings import RelaySettings


@dataclass
class SendResult:
    """What the relay said about one message."""

    refused: dict[str, tuple[int, str]] = field(default_factory=dict)


def is_loopback(host: str) -> bool:
    """True if every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class RelayConnection(Connection):
    """One SMTP session with the relay, reused for many messages.

    Use as a context manager; ``send_bytes`` sends a prepared message.
    """

    def __init__(
        self, relay: RelaySettings, *, loopback_only: bool = False, max_emails: int | None = None
    ) -> None:
        state = _Mail(
            server=relay.host,
            username=relay.username,
            password=relay.password,
            port=relay.port,
            use_tls=relay.security == "starttls",
            use_ssl=relay.security == "ssl",
            default_sender=relay.sender,
            debug=0,
            max_emails=max_emails,
            suppress=False,
            ascii_attachments=False,
        )
        super().__init__(state)  # type: ignore[arg-type]
        self.relay = relay
        self.loopback_only = loopback_only

    def configure_host(self) -> smtplib.SMTP:
        mail = self.mail
        if self.loopback_only and not is_loopback(mail.server):
            raise RelayRefused(
                f"relay {mail.server!r} is not on loopback; refused (MAIL_LOOPBACK_ONLY)"
            )
        context = ssl.create_default_context()
        timeout = self.relay.timeout
        host: smtplib.SMTP
        if mail.use_ssl:
            host = smtplib.SMTP_SSL(mail.server, mail.port, timeout=timeout, context=context)
        else:
            host = smtplib.SMTP(mail.server, mail.port, timeout=timeout)
        try:
            if mail.use_tls:
                host.starttls(context=context)
            if mail.username and mail.password:
                host.login(mail.username, mail.password)
        except BaseException:
            host.close()
            raise
        return host

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        host, self.host = self.host, None
        if host is None:
            return
        try:
            host.quit()
        except (smtplib.SMTPException, OSError):
            # The relay already dropped us; whatever it said was raised by the send.
            host.close()

    def send_bytes(self, envelope_from: str, recipients: list[str], data: bytes) -> SendResult:
        """Send one message; raises on total failure, reports partial refusals."""
        if self.host is None:
            self.host = self.configure_host()
        refused = self.host.sendmail(envelope_from, recipients, data)
        self.num_emails += 1
        if self.mail.max_emails and self.num_emails >= self.mail.max_emails:
            self.num_emails = 0
            self.close()
        return SendResult(
            refused={k: (v[0], v[1].decode("utf-8", "replace")) for k, v in refused.items()}
        )
