"""Admin-editable settings stored in the database, over the infrastructure config.

A setting saved on the admin screen wins over the environment; deleting it
falls back to the environment, then to the built-in default. The relay password
is stored encrypted with a key derived from ``SECRET_KEY``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app

from .db import db
from .models import Setting

SECURITY_CHOICES = ("none", "starttls", "ssl")

#: setting key → (config key it overrides, type)
RELAY_KEYS: dict[str, tuple[str, type]] = {
    "relay_host": ("MAIL_SERVER", str),
    "relay_port": ("MAIL_PORT", int),
    "relay_security": ("", str),
    "relay_username": ("MAIL_USERNAME", str),
    "relay_password": ("MAIL_PASSWORD", str),
    "relay_sender": ("MAIL_DEFAULT_SENDER", str),
    "org_name": ("ORG_NAME", str),
}


@dataclass(frozen=True)
class RelaySettings:
    """The effective SMTP relay configuration and where each value came from."""

    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    sender: str
    org_name: str
    timeout: float
    sources: dict[str, str]
    capture: bool


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"relay-password:" + current_app.secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt_secret(token: str) -> str | None:
    """Decrypt a stored secret; None if the secret key changed since it was saved."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        return None


def stored() -> dict[str, Any]:
    return {s.key: s.value for s in db.session.scalars(db.select(Setting))}


PASSWORD_FOR = "relay_password_for"  # noqa: S105 - a setting's name, not a password
"""The (host, port, user) that a password saved on the admin screen belongs to."""


def save(values: dict[str, Any], by: str) -> None:
    """Store overrides; a value of None removes the override. A password is stored
    with the relay it was given for; the caller commits nothing, this does."""
    if values.get("relay_password"):
        current = relay_settings()
        target = {
            "host": values.get("relay_host") or current.host,
            "port": int(values.get("relay_port") or current.port),
            "username": values.get("relay_username", current.username) or None,
        }
        values = {**values, PASSWORD_FOR: target}
    elif "relay_password" in values:
        values = {**values, PASSWORD_FOR: None}
    for key, value in values.items():
        if key not in RELAY_KEYS and key not in PACING_KEYS and key != PASSWORD_FOR:
            raise KeyError(key)
        row = db.session.get(Setting, key)
        if value is None:
            if row is not None:
                db.session.delete(row)
            continue
        if key == "relay_password":
            value = encrypt_secret(value)
        if row is None:
            db.session.add(Setting(key=key, value=value, updated_by=by))
        else:
            row.value = value
            row.updated_by = by
    db.session.commit()


def _config_security(config: dict[str, Any]) -> str:
    if config.get("MAIL_USE_SSL"):
        return "ssl"
    if config.get("MAIL_USE_TLS"):
        return "starttls"
    return "none"


def relay_settings() -> RelaySettings:
    """Read the effective relay settings; called per batch so changes need no restart."""
    config = current_app.config
    env_sources: dict[str, str] = config.get("CONFIG_SOURCES", {})
    overrides = stored()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, (config_key, _kind) in RELAY_KEYS.items():
        if key in overrides:
            values[key] = overrides[key]
            sources[key] = "admin screen"
        elif key == "relay_security":
            values[key] = _config_security(config)
            sources[key] = env_sources.get("MAIL_USE_TLS") or env_sources.get(
                "MAIL_USE_SSL", "default"
            )
        else:
            values[key] = config.get(config_key)
            sources[key] = env_sources.get(config_key, "default")
    capture = bool(config.get("MAIL_CAPTURE")) and "relay_host" not in overrides
    if capture:
        for key in ("relay_host", "relay_port"):
            if key not in overrides:  # a port saved on the admin screen is still the admin's
                sources[key] = "default (local mail capture)"
    # A password goes only to the relay it was given for: a new host, port or user on
    # the admin screen never receives the old one (nor the environment's).
    relay = {
        "host": values["relay_host"],
        "port": int(values["relay_port"]),
        "username": values["relay_username"] or None,
    }
    password = None
    if "relay_password" in overrides:
        if overrides.get(PASSWORD_FOR) == relay:
            password = decrypt_secret(overrides["relay_password"])
    elif config.get("MAIL_PASSWORD") and relay == {
        "host": config.get("MAIL_SERVER"),
        "port": int(config.get("MAIL_PORT") or 0),
        "username": config.get("MAIL_USERNAME") or None,
    }:
        password = config["MAIL_PASSWORD"]
    if values["relay_password"] and not password:
        sources["relay_password"] = "not used: given for another host, port or user"  # noqa: S105
    return RelaySettings(
        host=values["relay_host"],
        port=int(values["relay_port"]),
        security=values["relay_security"],
        username=values["relay_username"] or None,
        password=password or None,
        sender=values["relay_sender"],
        org_name=values["org_name"],
        timeout=float(config["MAIL_TIMEOUT"]),
        sources=sources,
        capture=capture,
    )


#: pacing setting key → config key holding its default (from the environment)
PACING_KEYS: dict[str, str] = {
    "pacing_per_domain_per_hour": "PACING_PER_DOMAIN_PER_HOUR",
    "pacing_per_address_per_hour": "PACING_PER_ADDRESS_PER_HOUR",
    "pacing_business_hours_only": "PACING_BUSINESS_HOURS_ONLY",
}
