"""Small helpers shared by the tests."""

from __future__ import annotations

import re
from typing import Any

APPEALS_URL = "/api/v1/campaigns/pavlov-extradition/appeals"


def supporter(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "Ana García",
        "email": "ana@example.org",
        "language": "es",
        "country": "GB",
        "message": "Por favor, actúe ya.",
        "consent": True,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def confirmation_token(raw: bytes | str) -> str:
    """The token at the end of the confirmation link in a received message."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    found = re.findall(r"/confirm/([A-Za-z0-9_\-]{20,})", text)
    assert found, "no confirmation link in the message"
    return found[-1]
