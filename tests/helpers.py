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


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def log_in(client: Any, email: str, password: str) -> Any:
    """Log a staff member in through the real form."""
    token = csrf_token(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "email": email, "password": password})
