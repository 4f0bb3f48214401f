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
