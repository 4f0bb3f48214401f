"""gunicorn's access log, without confirmation tokens or appeals' public ids.

A confirmation link is a key to send an appeal in someone's name. Its token is in
the URL path (``/confirm/<token>``, ``/api/v1/confirm/<token>``), and a browser
sends that URL again as the ``Referer`` of the form on the page. This logger
writes ``/confirm/[token]`` in their place, wherever the log format would show
them: the request line, the path, the referrer, any header or environ value. An
appeal's public id is the key to its status page and its printable letter (which
name the supporter): it is written ``[appeal]``.

``make run`` starts gunicorn with it (``--logger-class campaign.weblog.AccessLogger``);
do the same in front of a production server, and see the README for nginx.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

TOKEN = re.compile(r"(/confirm/)[^/?#\s\"]+")
REDACTED = r"\1[token]"
PUBLIC_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def redact(text: str) -> str:
    return PUBLIC_ID.sub("[appeal]", TOKEN.sub(REDACTED, text))


class AccessLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            key: redact(value)
            if isinstance(value, str) and ("/confirm/" in value or "-" in value)
            else value
            for key, value in atoms.items()
        }
