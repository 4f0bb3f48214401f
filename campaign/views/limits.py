"""Rate limits on supporters' submissions: they count real sends only.

Two limits, each for a different harm:

- **Per client** (``RATELIMIT_APPEALS``, generous): a school, an office or a mobile
  network shows many supporters behind one address, so the limit leaves room for a
  crowd. Only a submission that reached the service counts (an appeal sent for
  confirmation, a link asked for again); previews and forms with mistakes cost
  nothing. Over the limit, the form comes back with what was typed and says when to
  try again (``Retry-After``). An IPv6 client is its /64: one subscriber's network.
- **Per e-mail address** (``RATELIMIT_APPEALS_EMAIL``, tight): what one address can
  set off, from anywhere. Over it, a submission gets the answer every valid
  submission gets and changes nothing, so that no one learns from a refusal that
  someone else used the address lately (the owner's mail is capped per day anyway,
  ``CONFIRMATION_MAILS_PER_DAY``).
"""

from __future__ import annotations

import hashlib
import ipaddress

from flask import current_app, g
from flask_limiter.util import get_remote_address
from limits import parse_many
from werkzeug.wrappers import Response

from . import limiter

CLIENT_SCOPE = "appeals"
EMAIL_SCOPE = "appeals-email"


def client_key() -> str:
    """The client's address; for IPv6, its /64 (one subscriber's whole network)."""
    address = get_remote_address() or "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _client_limit() -> str:
    return str(current_app.config["RATELIMIT_APPEALS"])


def count_this_request() -> None:
    """Mark this request as a real send: the per-client limit counts it."""
    g.counted_send = True


def _counted(response: Response) -> bool:
    return bool(g.get("counted_send"))


#: On every route a supporter sends from (form, API, "send me the link again"): one
#: budget per client, checked before the request and charged after a real send.
per_client = limiter.shared_limit(
    _client_limit,
    scope=CLIENT_SCOPE,
    key_func=client_key,
    methods=["POST"],
    deduct_when=_counted,
)


def email_allowed(email: str) -> bool:
    """Count one submission of this (normalised) address; False once it had its share.

    The key is a hash: the storage never holds an address. If the storage fails, the
    submission goes ahead, as the other limits do (``RATELIMIT_SWALLOW_ERRORS``).
    """
    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return True
    key = hashlib.sha256(email.encode()).hexdigest()
    try:
        items = parse_many(str(current_app.config["RATELIMIT_APPEALS_EMAIL"]))
        return all([limiter.limiter.hit(item, EMAIL_SCOPE, key) for item in items])
    except Exception:  # storage down: never turn a supporter away for it
        current_app.logger.exception("the per-address limit could not be counted")
        return True
