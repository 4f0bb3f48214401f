"""The transport: one SMTP session with the relay, reused for a stream of messages.

The contract is Django's mail backends' (open, close, send messages), narrowed to
the one thing the engine needs: :meth:`RelayConnection.send_stream` sends messages
in order and yields what the relay said about each. Sending one message is a
stream of one (:meth:`RelayConnection.send`).

Over ``smtplib`` it adds what a worker needs to trust a relay: a socket timeout,
certificate verification on STARTTLS and implicit TLS, no password over a
connection without TLS (except to loopback), a loopback-only guard for tests and
demos, PIPELINING (RFC 2920) across messages, and the relay's own words per
recipient instead of exceptions.
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

from ..exceptions import RelayRefused
from ..settings import RelaySettings

K = TypeVar("K")

_MAX_LINE = 8192
"""Longest reply line accepted, as ``smtplib``'s own reader."""


@dataclass(frozen=True)
class Reply:
    """One SMTP reply."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @classmethod
    def of(cls, code: int, text: bytes | str) -> Reply:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return cls(code, " ".join(text.split()))


@dataclass(frozen=True)
class Transmission:
    """What the relay answered for one message that reached it: the reply to MAIL FROM,
    each recipient's reply to RCPT TO, and the reply that ended the transaction (to
    the message's content, or to a DATA that it refused)."""

    mail: Reply
    rcpt: dict[str, Reply]
    final: Reply

    @property
    def accepted(self) -> list[str]:
        """The recipients the relay took the message for."""
        if self.mail.code != 250 or self.final.code != 250:
            return []
        return [r for r, reply in self.rcpt.items() if reply.code in (250, 251)]


@dataclass(frozen=True)
class SessionLost:
    """The session ended before the relay said anything about this message: a 421,
    a dropped or refused connection, a timeout, a TLS or log-in failure. Nothing
    about the message itself; it goes again on a new session."""

    reason: str

    @classmethod
    def of(cls, exc: BaseException, timeout: float | None = None) -> SessionLost:
        if isinstance(exc, _Closing):
            return cls(str(exc.reply))
        if isinstance(exc, smtplib.SMTPResponseException):
            return cls(str(Reply.of(exc.smtp_code, exc.smtp_error)))
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            # smtplib reports a timeout as "Connection unexpectedly closed": say what it was.
            return cls(f"no answer from the relay within {timeout:g} s (MAIL_TIMEOUT)")
        return cls(f"{type(exc).__name__}: {exc}")


Result = Transmission | SessionLost


class Envelope(Protocol):
    """A message as the transport needs it (``campaign.mail.Outgoing`` is one)."""

    @property
    def envelope_from(self) -> str: ...

    @property
    def recipients(self) -> list[str]: ...

    @property
    def data(self) -> bytes: ...


class _Closing(Exception):
    """The relay answered 421: it is closing the session."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def is_loopback(host: str) -> bool:
    """True if every address ``host`` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


class _Wire:
    """Commands out, replies in. With PIPELINING a group of commands goes out in one
    write and the replies are read after; without it each command waits for the
    reply to the one before, so the same loop serves both kinds of relay."""

    def __init__(self, host: smtplib.SMTP, pipelining: bool) -> None:
        self.sock = host.sock
        # smtplib's own buffered reader of the socket: nothing it holds is lost.
        self.file = host.file or host.sock.makefile("rb")  # type: ignore[union-attr]
        host.file = self.file
        self.pipelining = pipelining
        self.unsent: deque[bytes] = deque()

    def send(self, chunks: list[bytes]) -> None:
        if self.pipelining:
            self.sock.sendall(b"".join(chunks))  # type: ignore[union-attr]
        else:
            self.unsent.extend(chunks)

    def reply(self) -> Reply:
        """The next reply, read as ``smtplib.SMTP.getreply`` does, at a fifth of its cost."""
        if self.unsent:
            self.sock.sendall(self.unsent.popleft())  # type: ignore[union-attr]
        texts = []
        while True:
            line = self.file.readline(_MAX_LINE + 1)
            if not line:
                raise smtplib.SMTPServerDisconnected("the relay closed the connection")
            if len(line) > _MAX_LINE:
                raise smtplib.SMTPResponseException(500, b"Line too long.")
            texts.append(line[4:].strip())
            if line[3:4] != b"-":
                break
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        reply = Reply(code, b" ".join(texts).decode("utf-8", "replace"))
        if code == 421:
            raise _Closing(reply)
        return reply


def _envelope(sender: str, recipients: list[str]) -> list[bytes]:
    lines = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
    return [f"{line}\r\n".encode("ascii") for line in lines]


def _content(data: bytes) -> bytes:
    """Escape leading dots (RFC 5321 4.5.2) and add the end-of-data line."""
    data = data.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@dataclass
class _Waiting:
    """A message whose envelope the relay took; its content goes with the next envelope."""

    key: object
    message: Envelope
    mail: Reply
    rcpt: dict[str, Reply]


class RelayConnection:
    """One SMTP session with the relay, opened on first use, reused for many messages."""

    def __init__(
        self,
        relay: RelaySettings,
        *,
        loopback_only: bool = False,
        max_emails: int | None = None,
        ca_file: str | None = None,
    ) -> None:
        self.relay = relay
        self.loopback_only = loopback_only
        self.max_emails = max_emails
        self.ca_file = ca_file
        self.host: smtplib.SMTP | None = None
        self.sent_in_session = 0

    def __enter__(self) -> RelayConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context

    def open(self) -> smtplib.SMTP:
        """Connect, say EHLO, start TLS and log in, as the relay settings say."""
        if self.host is not None:
            return self.host
        relay = self.relay
        loopback = is_loopback(relay.host)
        if self.loopback_only and not loopback:
            raise RelayRefused(
                f"relay {relay.host!r} is not on loopback; refused (MAIL_LOOPBACK_ONLY)"
            )
        if relay.username and relay.password and relay.security == "none" and not loopback:
            raise RelayRefused(
                "the relay has a password but no TLS: choose STARTTLS or SSL so that the "
                "password never crosses the network in the clear"
            )
        host: smtplib.SMTP
        if relay.security == "ssl":
            host = smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=relay.timeout, context=self._tls_context()
            )
        else:
            host = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
        try:
            host.ehlo_or_helo_if_needed()  # so that has_extn() knows the relay's features
            if relay.security == "starttls":
                host.starttls(context=self._tls_context())
                host.ehlo()
            if relay.username and relay.password:
                host.login(relay.username, relay.password)
        except BaseException:
            host.close()
            raise
        self.host = host
        self.sent_in_session = 0
        return host

    def close(self) -> None:
        host, self.host = self.host, None
        if host is None:
            return
        try:
            host.quit()
        except (smtplib.SMTPException, OSError):
            host.close()  # the relay already dropped us; what it said was reported

    def send(self, message: Envelope) -> Result:
        """Send one message: a stream of one."""
        for _, result in self.send_stream([(None, message)]):
            return result
        raise AssertionError("a stream of one yields one result")  # pragma: no cover

    def send_stream(self, messages: Iterable[tuple[K, Envelope]]) -> Iterator[tuple[K, Result]]:
        """Send many messages over this session, one round trip each: every message's
        content goes out in the same write as the next message's envelope (RFC 2920
        allows message content as the first "command" of a group).

        Yields ``(key, result)`` in order. When the session ends (a 421, a dropped or
        refused connection, the relay's per-session limit) it yields
        :class:`SessionLost` for the message whose content was on its way and for the
        one whose envelope was, then stops, having taken no further message from
        ``messages``: the caller opens a new session for the rest.
        """
        items = iter(messages)
        try:
            host = self.open()
        except (smtplib.SMTPException, OSError) as exc:
            first = next(items, None)
            if first is not None:
                yield first[0], SessionLost.of(exc, self.relay.timeout)
            return
        wire = _Wire(host, host.has_extn("pipelining"))
        waiting: _Waiting | None = None
        current: tuple[K, Envelope] | None = None
        reset = False
        try:
            while not self._session_full(1 if waiting else 0):
                current = next(items, None)
                if current is None:
                    break
                key, msg = current
                chunks = [_content(waiting.message.data)] if waiting else []
                if reset:
                    chunks.append(b"RSET\r\n")
                wire.send(chunks + _envelope(msg.envelope_from, msg.recipients))
                if waiting:
                    final = wire.reply()
                    done, waiting = waiting, None
                    yield done.key, self._finished(done, final)  # type: ignore[misc]
                if reset:
                    wire.reply()
                    reset = False
                mail = wire.reply()
                rcpt = {r: wire.reply() for r in msg.recipients}
                data = wire.reply()
                current = None
                if (
                    data.code == 354
                    and mail.code == 250
                    and any(r.code in (250, 251) for r in rcpt.values())
                ):
                    waiting = _Waiting(key, msg, mail, rcpt)
                    continue
                if data.code == 354:  # DATA accepted with nothing deliverable: end it empty
                    wire.send([b".\r\n"])
                    data = wire.reply()
                reset = True
                yield key, Transmission(mail, rcpt, data if mail.code == 250 else mail)
            if waiting:
                wire.send([_content(waiting.message.data)])
                final = wire.reply()
                done, waiting = waiting, None
                yield done.key, self._finished(done, final)  # type: ignore[misc]
            if reset:
                wire.send([b"RSET\r\n"])
                wire.reply()
            if self._session_full(0):
                self.close()
        except (_Closing, smtplib.SMTPException, OSError) as exc:
            # The session is over. The message whose content was on its way and the
            # one whose envelope was sent share the loss; the rest was never taken.
            self.close()
            lost = SessionLost.of(exc, self.relay.timeout)
            if waiting:
                yield waiting.key, lost  # type: ignore[misc]
            if current is not None:
                yield current[0], lost

    def _finished(self, waiting: _Waiting, final: Reply) -> Transmission:
        if final.code == 250:
            self.sent_in_session += 1
        return Transmission(waiting.mail, waiting.rcpt, final)

    def _session_full(self, in_flight: int) -> bool:
        """The relay's per-session limit (``MAIL_MAX_EMAILS``) is reached."""
        return bool(self.max_emails) and self.sent_in_session + in_flight >= self.max_emails  # type: ignore[operator]
