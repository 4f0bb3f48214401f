"""What the relay's replies mean for each recipient: accepted, try again later, or never.

The one place that reads SMTP reply codes. The transport reports what was said;
this module decides what it means; the runner and the recipients module act on it.

* 250/251 for the recipient and 250 for the message: accepted.
* 5xx: refused for good, with the relay's words.
* 4xx (and anything odd): try again after :func:`backoff`; after
  :data:`MAX_ATTEMPTS` tries the copy is refused for good.
* A 421, a dropped or refused connection, a TLS or log-in failure: the session's
  problem, not the message's (:class:`~.transport.SessionLost`). The message goes
  again on a new session and the try does not count; a relay that gets nothing
  through :data:`RELAY_DOWN_AFTER` sessions in a row is down for now, and the
  batch's appeals wait for their next attempt without losing one.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum

from .transport import Reply, Transmission

MAX_ATTEMPTS = 6
"""Tries per recipient before a transient refusal becomes a permanent one; also the
number of times an appeal's worker may die under it before the appeal fails."""

RETRY_BACKOFF = (30, 60, 300, 900, 1800)
"""Seconds to wait before try 2, 3, … (the last one repeats)."""

RELAY_DOWN_AFTER = 2
"""Sessions in a row that got nothing through before the relay counts as down."""


class Verdict(Enum):
    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th try."""
    return timedelta(seconds=RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1])


def of_reply(reply: Reply) -> Verdict:
    """A refusal's meaning: only 5xx is for good."""
    return Verdict.PERMANENT if 500 <= reply.code < 600 else Verdict.TRANSIENT


def verdicts(transmission: Transmission) -> dict[str, tuple[Verdict, Reply]]:
    """Each recipient's verdict and the reply it rests on.

    A refused MAIL FROM speaks for every recipient; a refused RCPT for its own; a
    refused DATA or content for every recipient the relay had taken.
    """
    out: dict[str, tuple[Verdict, Reply]] = {}
    for recipient, reply in transmission.rcpt.items():
        if transmission.mail.code != 250:
            reply = transmission.mail
        elif reply.code in (250, 251):
            reply = transmission.final
            if reply.code == 250:
                out[recipient] = (Verdict.ACCEPTED, reply)
                continue
        out[recipient] = (of_reply(reply), reply)
    return out
