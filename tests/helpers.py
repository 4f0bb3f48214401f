"""Small helpers shared by the tests."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

APPEALS_URL = "/api/v1/campaigns/pavlov-extradition/appeals"

CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium, driven by Playwright (no browser download)."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


def self_signed(tmp_path: Any) -> tuple[Any, Any]:
    """A certificate for 127.0.0.1 that no trust store knows: (server context, its PEM file)."""
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


class _Forms(HTMLParser):
    """What a browser would submit for each form on a page, keyed by its action."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._select: str | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
            return
        if not self.forms:
            return
        fields = self.forms[-1][1]
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("submit", "button", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            fields[name] = a.get("value", "y" if kind == "checkbox" else "")
        elif tag == "select" and name:
            self._select, self._first_option = name, None
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._first_option is None:
                self._first_option = value
                fields.setdefault(self._select, value)
            if "selected" in a:
                fields[self._select] = value
        elif tag == "textarea" and name:
            self._textarea = name
            fields[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea and self.forms:
            # Browsers drop the one line break that follows <textarea>.
            fields = self.forms[-1][1]
            fields[self._textarea] = re.sub(r"^\r?\n", "", fields[self._textarea])
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea and self.forms:
            self.forms[-1][1][self._textarea] += data


def form_fields(html: str, action: str) -> dict[str, str]:
    parser = _Forms()
    parser.feed(html)
    matches = [fields for act, fields in parser.forms if act == action]
    assert len(matches) == 1, f"{len(matches)} forms post to {action!r}"
    return dict(matches[0])


def submit(client: Any, page: str, action: str, button: str, **changes: Any) -> Any:
    """Load ``page``, fill in the form that posts to ``action`` like a browser, press ``button``."""
    data = form_fields(client.get(page).get_data(as_text=True), action)
    data.update({k: str(v) for k, v in changes.items()})
    data[button] = "y"
    return client.post(action or page, data=data)


def stored_appeal(app: Any, email: str) -> Any:
    """The appeal this address wrote, read from the database and detached."""
    from campaign.db import db
    from campaign.models import Appeal

    with app.app_context():
        found = db.session.scalar(db.select(Appeal).filter_by(email=email))
        assert found is not None
        db.session.expunge(found)
        return found
