"""DKIM signatures (RFC 6376) on the exact bytes the relay gets.

A message is signed once, where its bytes are built (:mod:`campaign.mail`,
:mod:`campaign.delivery.receipts`): the ``DKIM-Signature`` header is put in
front of those bytes and nothing is re-encoded after it.

* **Canonicalisation** relaxed/relaxed, done here on bytes that :mod:`campaign.mime`
  already made plain (CRLF, 7-bit, lines under 78). dkimpy verifies in the tests.
* **The RSA (or Ed25519) operation** is the ``cryptography`` package's (OpenSSL):
  dkimpy's own RSA is pure Python and ~30 times slower.
* **No ``t=`` tag.** RSA PKCS#1 v1.5 and Ed25519 are deterministic, so without a
  timestamp the signature depends on the bytes and the key only: a retry, which
  re-sends the same bytes, carries the same signature (the tests compare them).
  ``t=`` is optional in RFC 6376 and no receiver requires it; a time derived from
  the confirmation would only exist for appeals, not for the supporters' mails.
* **Headers signed**: :data:`SIGNED_HEADERS`. Cc and Reply-To are named even when a
  message has none, which stops anyone adding them later (RFC 6376 section 5.4).
* **The key is loaded once per process** (and again only if its file changes).

Where things are: ``flask --app app dkim init`` writes :data:`KEY_FILE` (mode 0600)
and :data:`META_FILE` (selector and domain) in the instance folder. The settings
``DKIM_KEY_FILE``, ``DKIM_SELECTOR`` and ``DKIM_DOMAIN`` override them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

SIGNED_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
)
"""The header fields each signature covers, in this order."""

KEY_FILE = "dkim.key"
"""The private key, PEM (PKCS#8), in the instance folder."""

META_FILE = "dkim.json"
"""Selector and domain written by ``dkim init``, beside the key."""

RSA_BITS = 2048
"""Key size of ``dkim init`` (RFC 8301: at least 1024, 2048 recommended)."""

_SIGNED_SET = frozenset(s.encode() for s in SIGNED_HEADERS)
_WSP = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+(?=\r\n|\Z)")
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class DkimError(ValueError):
    """The DKIM key or its settings are unusable."""


def valid_name(name: str) -> bool:
    """A selector or domain: dot-separated DNS labels, nothing else."""
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in labels)


def _relaxed_header(field: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, runs of WSP as one space."""
    name, _, value = field.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: no WSP at line ends, runs of WSP as one space, no empty
    lines at the end, and a final CRLF unless the body is empty."""
    # Quoted-printable bodies (campaign.mime) rarely have anything to change: the
    # substring tests cost a microsecond, the regular expressions a hundred.
    if b"\t" in body or b"  " in body or b" \r\n" in body or body.endswith(b" "):
        body = _WSP.sub(b" ", _TRAILING_WSP.sub(b"", body))
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return b"" if body == b"\r\n" else body


def _fields(head: bytes) -> list[bytes]:
    """The header block as whole fields, each with its folded lines."""
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields


def _fold(tags: list[str], b64: str) -> bytes:
    """The DKIM-Signature field: one tag list per line, ``b=`` cut in 72-char pieces."""
    pieces = [b64[i : i + 72] for i in range(0, len(b64), 72)] or [""]
    return ("DKIM-Signature: " + ";\r\n\t".join(tags) + ";\r\n\tb=" + "\r\n\t".join(pieces)).encode(
        "ascii"
    )


@dataclass(frozen=True)
class Signer:
    """A key with its selector and domain; signs and publishes."""

    selector: str
    domain: str
    key: Any  # rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def kind(self) -> str:
        return "ed25519" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "rsa"

    def sign(self, data: bytes) -> bytes:
        """``data`` with a ``DKIM-Signature`` header in front; the rest unchanged."""
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:  # no body at all: the whole thing is the header block
            head, body = data.removesuffix(b"\r\n"), b""
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode()
        present: dict[bytes, list[bytes]] = {}
        for field in _fields(head):
            name = field.partition(b":")[0].strip(b" \t").lower()
            if name in _SIGNED_SET:
                present.setdefault(name, []).append(field)
        # One instance of each, the last (RFC 6376 5.4.2); an absent one signs "none".
        signed = b"".join(
            _relaxed_header(present[name.encode()][-1])
            for name in SIGNED_HEADERS
            if name.encode() in present
        )
        algorithm = "ed25519-sha256" if self.kind == "ed25519" else "rsa-sha256"
        tags = [
            "v=1",
            f"a={algorithm}",
            "c=relaxed/relaxed",
            f"d={self.domain}",
            f"s={self.selector}",
            "h=" + ":".join(SIGNED_HEADERS),
            f"bh={body_hash}",
        ]
        unsigned = _relaxed_header(_fold(tags, "")).removesuffix(b"\r\n")
        payload = signed + unsigned
        if self.kind == "ed25519":  # RFC 8463: Ed25519 over the SHA-256 of the data
            signature = self.key.sign(hashlib.sha256(payload).digest())
        else:
            signature = self.key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return _fold(tags, base64.b64encode(signature).decode()) + b"\r\n" + data

    def public_key(self) -> str:
        """The ``p=`` value of the DNS record."""
        public = self.key.public_key()
        if self.kind == "ed25519":
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode()

    def record(self) -> str:
        """The TXT record's text: ``v=DKIM1; k=rsa; p=…``."""
        return f"v=DKIM1; k={self.kind}; p={self.public_key()}"

    def dns_line(self) -> str:
        """One line to publish: ``S._domainkey.D TXT "v=DKIM1; k=rsa; p=…"``."""
        return f'{self.selector}._domainkey.{self.domain} TXT "{self.record()}"'


def load_key(pem: bytes) -> Any:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise DkimError(f"the DKIM key is not an unencrypted PEM private key: {e}") from e
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise DkimError(f"the DKIM key has {key.key_size} bits; at least 1024 are needed")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DkimError("the DKIM key must be RSA or Ed25519")


@lru_cache(maxsize=8)
def _signer(path: str, mtime_ns: int, selector: str, domain: str) -> Signer:
    """Loaded once per process, and again only if the file changes (mtime)."""
    return Signer(selector, domain, load_key(Path(path).read_bytes()))


def key_path(config: Any, instance_path: str) -> Path:
    return Path(config.get("DKIM_KEY_FILE") or Path(instance_path) / KEY_FILE)


def signer_from(config: Any, instance_path: str) -> Signer | None:
    """The configured signer, or None when no key is configured.

    A key file named by ``DKIM_KEY_FILE`` must exist; the default one may not
    (then mail goes unsigned). A key without selector and domain is an error."""
    path = key_path(config, instance_path)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        if config.get("DKIM_KEY_FILE"):
            raise DkimError(f"DKIM_KEY_FILE {path} does not exist") from None
        return None
    selector, domain = config.get("DKIM_SELECTOR"), config.get("DKIM_DOMAIN")
    if not (selector and domain):
        meta = path.with_name(META_FILE)
        saved = json.loads(meta.read_text()) if meta.exists() else {}
        selector = selector or saved.get("selector")
        domain = domain or saved.get("domain")
    if not (selector and domain):
        raise DkimError(
            f"the DKIM key {path} has no selector and domain: set DKIM_SELECTOR and "
            "DKIM_DOMAIN, or run flask dkim init"
        )
    if not (valid_name(selector) and valid_name(domain)):
        raise DkimError("DKIM_SELECTOR and DKIM_DOMAIN must be DNS names")
    return _signer(str(path), mtime, selector, domain.lower())


def current_signer() -> Signer | None:
    from flask import current_app

    return signer_from(current_app.config, current_app.instance_path)


def sign(data: bytes) -> bytes:
    """``data`` signed with the application's key, or unchanged if there is none."""
    signer = current_signer()
    return data if signer is None else signer.sign(data)


def strip_signature(data: bytes) -> bytes:
    """``data`` without the DKIM-Signature this module put in front of it."""
    if not data.startswith(b"DKIM-Signature:"):
        return data
    lines = data.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def create_key(
    instance_path: str, selector: str, domain: str, *, kind: str = "rsa", force: bool = False
) -> Signer:
    """``dkim init``: a new key in the instance folder (mode 0600) and its names."""
    if not (valid_name(selector) and valid_name(domain)):
        raise DkimError("selector and domain must be DNS names (letters, digits, hyphens, dots)")
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / KEY_FILE
    if path.exists() and not force:
        raise DkimError(f"{path} exists; --force replaces it (publish the new record first)")
    key: Any = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    path.chmod(0o600)
    meta = {"selector": selector, "domain": domain.lower()}
    path.with_name(META_FILE).write_text(json.dumps(meta) + "\n")
    return Signer(selector, domain.lower(), key)
