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
        """Send one message; raises on total failure, reports partial refusals.

        Uses PIPELINING (RFC 2920) when the relay offers it: MAIL, every RCPT and
        DATA go out in one write, which is ~5x faster than a round trip each.
        Raises the same ``smtplib`` exceptions as ``SMTP.sendmail``. A ``421``
        closes the session (the next send reconnects) and is raised as such.
        """
        if self.host is None:
            self.host = self.configure_host()
        host = self.host
        try:
            if host.has_extn("pipelining"):
                refused = self._pipelined(host, envelope_from, recipients, data)
            else:
                refused = host.sendmail(envelope_from, recipients, data)
        except smtplib.SMTPException as exc:
            if getattr(exc, "smtp_code", None) == 421 or host.sock is None:
                self.close()
            raise
        except OSError:
            self.close()
            raise
        self.num_emails += 1
        if self.mail.max_emails and self.num_emails >= self.mail.max_emails:
            self.num_emails = 0
            self.close()
        return SendResult(
            refused={k: (v[0], v[1].decode("utf-8", "replace")) for k, v in refused.items()}
        )

    @staticmethod
    def _pipelined(
        host: smtplib.SMTP, sender: str, recipients: list[str], data: bytes
    ) -> dict[str, tuple[int, bytes]]:
        commands = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
        host.send("\r\n".join(commands) + "\r\n")
        mail_reply = host.getreply()
        refused = {}
        rcpt_421 = None
        for recipient in recipients:
            code, text = host.getreply()
            if code == 421:
                rcpt_421 = (code, text)
            if code not in (250, 251):
                refused[recipient] = (code, text)
        data_code, data_text = host.getreply()
        for code, text in (mail_reply, rcpt_421 or (0, b""), (data_code, data_text)):
            if code == 421:
                host.close()
                raise smtplib.SMTPResponseException(code, text)
        if data_code == 354:
            if mail_reply[0] == 250 and len(refused) < len(recipients):
                host.sock.sendall(_dot_stuffed(data))  # type: ignore[union-attr]
                code, text = host.getreply()
                if code != 250:
                    if code == 421:
                        host.close()
                    raise smtplib.SMTPDataError(code, text)
                return refused
            # DATA was accepted although nothing can be delivered: end it empty.
            host.sock.sendall(b".\r\n")  # type: ignore[union-attr]
            host.getreply()
        host.rset()
        if mail_reply[0] != 250:
            raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], sender)
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)
        raise smtplib.SMTPDataError(data_code, data_text)


def _dot_stuffed(data: bytes) -> bytes:
    """Escape leading dots (RFC 5321 4.5.2) and add the end-of-data line."""
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"
