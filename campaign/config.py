"""Layered configuration: defaults, then ``instance/config.py``, then the environment.

Infrastructure settings (database, broker, relay) live here. Settings an admin
edits at run time live in the database, see :mod:`campaign.settings`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

#: Port of the embedded Redis-compatible broker that ``make run`` starts when no
#: ``REDIS_URL`` is given.
EMBEDDED_REDIS_PORT = 6390

#: Port of the local SMTP capture that ``make run`` starts when no ``MAIL_SERVER``
#: is given.
MAIL_CAPTURE_PORT = 1025

_TRUE = {"1", "true", "yes", "on"}


def env_flag(value: str | None, default: bool = False) -> bool:
    """Read a boolean from an environment string such as ``true`` or ``0``."""
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def database_url(url: str | None, instance_path: str) -> str:
    """Return a SQLAlchemy URL, defaulting to SQLite in the instance folder.

    ``postgres://`` and ``postgresql://`` URLs get the psycopg 3 driver.
    """
    if not url:
        return "sqlite:///" + str(Path(instance_path) / "appeals.db")
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def defaults(instance_path: str) -> dict[str, Any]:
    """Configuration used when nothing else is set: SQLite, embedded broker, capture."""
    return {
        "SECRET_KEY": None,
        "SQLALCHEMY_DATABASE_URI": database_url(None, instance_path),
        # Idle connections are pinged before use (campaign/db.py), busy ones are not.
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "REDIS_URL": f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0",
        "MAIL_SERVER": None,
        "MAIL_PORT": None,
        "MAIL_USE_TLS": False,
        "MAIL_USE_SSL": False,
        "MAIL_USERNAME": None,
        "MAIL_PASSWORD": None,
        "MAIL_DEFAULT_SENDER": "appeals@localhost",
        "MAIL_TIMEOUT": 30.0,
        # Reconnect after this many messages on one SMTP session (None: as the relay allows).
        "MAIL_MAX_EMAILS": None,
        "MAIL_SUPPRESS_SEND": False,
        "MAIL_CAPTURE_PORT": MAIL_CAPTURE_PORT,
        "MAIL_CAPTURE_DIR": str(Path(instance_path) / "mail-capture"),
        # Refuse any relay that is not on loopback: tests, demos and benchmarks.
        "MAIL_LOOPBACK_ONLY": False,
        # Certificates of a private CA that signed the relay's (PEM file); the system's
        # trust store is used as well.
        "MAIL_CA_FILE": None,
        "ORG_NAME": "Urgent Action Network",
        "PUBLIC_URL": None,
        "EMAIL_CHECK_DELIVERABILITY": False,
        "CAMPAIGNS_DIR": str(Path(__file__).resolve().parent.parent / "urgent-actions"),
        "RATELIMIT_STORAGE_URI": None,
        # Real sends (not previews, not forms with mistakes) per client: generous, for a
        # school or an office behind one address; and per e-mail address: tight.
        "RATELIMIT_APPEALS": "600 per hour;60 per minute",
        "RATELIMIT_APPEALS_EMAIL": "5 per hour",
        "RATELIMIT_LOGIN": "10 per minute",
        "RATELIMIT_HEADERS_ENABLED": True,
        # A broker outage must not turn supporters away: fall back to per-process limits.
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Proxies in front of the app (nginx: 1). Their X-Forwarded-For and
        # X-Forwarded-Proto are believed, no one else's.
        "TRUSTED_PROXIES": 0,
        # Staff sessions end after this long without a request, and this long after
        # signing in, whatever happens.
        "SESSION_IDLE_MINUTES": 30.0,
        "SESSION_MAX_HOURS": 12.0,
        "HSTS_MAX_AGE": 31536000,
        # Sign-in attempts per account, whoever makes them (per client: RATELIMIT_LOGIN).
        "RATELIMIT_LOGIN_ACCOUNT": "10 per hour",
        # The admin's "check connection" and "test message" reach only these ports.
        "RELAY_CHECK_PORTS": (25, 465, 587),
        "RELAY_CHECK_TIMEOUT": 5.0,
        # Supporters: confirmation links last this long; one address gets at most this
        # many confirmation mails a day, however many times it is submitted.
        "CONFIRM_TOKEN_DAYS": 7.0,
        "CONFIRMATION_MAILS_PER_DAY": 1,
        # Personal data of an appeal is removed this many days after it is sent,
        # failed or cancelled; the appeal stays, anonymous, in the counts.
        "RETENTION_DAYS": 30.0,
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "RQ_QUEUES": ["supporters", "appeals", "receipts"],
        # Deliveries to targets, per receiving domain and per address (see pacing.py).
        "PACING_ENABLED": True,
        "PACING_PER_DOMAIN_PER_HOUR": 120.0,
        "PACING_PER_ADDRESS_PER_HOUR": 60.0,
        "PACING_BUSINESS_HOURS_ONLY": False,
        "PACING_BURST_SECONDS": 2.0,
        # The dispatcher: how long it gathers confirmed appeals into one batch, how
        # often it looks for lost work, how many appeals go in one job, and how long
        # a batch may go without a heartbeat before its appeals are recovered.
        "DISPATCH_WINDOW": 0.2,
        "SWEEP_INTERVAL": 1.0,
        "DELIVERY_BATCH_SIZE": 200,
        "SENDING_LEASE_SECONDS": 300.0,
        # Digests (campaign/digests.py): the hour of the main addressee's day that a
        # campaign's digest periods start from (a daily digest goes then); most
        # supporters, and most bytes of names and sentences, in one digest message
        # (more are split into parts); minutes before a failed digest is tried again.
        "DIGEST_HOUR": 8,
        "DIGEST_MAX_SUPPORTERS": 5000,
        "DIGEST_MAX_BYTES": 5_000_000,
        "DIGEST_RETRY_MINUTES": 10.0,
        "RQ_ASYNC": True,
        # DKIM (campaign/dkim.py): the key and its names; by default those that
        # flask dkim init wrote in the instance folder. No key: mail goes unsigned.
        "DKIM_KEY_FILE": None,
        "DKIM_SELECTOR": None,
        "DKIM_DOMAIN": None,
        # flask doctor asks this DNS server (host or host:port); default: the system's.
        "DOCTOR_NAMESERVER": None,
        # Bounces (campaign/bounces.py): an appeal's envelope sender becomes
        # "<local>+<token>@<domain>" of this address ("bounces@org.example"; just
        # "bounces" takes the sender's domain); unset, the envelope sender stays the
        # From address. flask appeals bounces reads the returned reports from this
        # mailbox: imap://user:password@host:port/INBOX or imaps://…
        "BOUNCE_ADDRESS": None,
        "BOUNCE_IMAP_URL": None,
        # /metrics (campaign/health.py): with a token, only to "Authorization: Bearer
        # <token>"; without one, only to clients on loopback.
        "METRICS_TOKEN": None,
        # "json": one JSON object per log line (campaign/logs.py); "text" otherwise.
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
    }


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Pick the settings the environment gives; unset variables are left out."""
    out: dict[str, Any] = {}
    for name in (
        "SECRET_KEY",
        "REDIS_URL",
        "MAIL_SERVER",
        "MAIL_USERNAME",
        "MAIL_PASSWORD",
        "MAIL_DEFAULT_SENDER",
        "MAIL_CA_FILE",
        "ORG_NAME",
        "PUBLIC_URL",
        "RATELIMIT_APPEALS",
        "RATELIMIT_APPEALS_EMAIL",
        "RATELIMIT_LOGIN",
        "RATELIMIT_LOGIN_ACCOUNT",
        "DKIM_KEY_FILE",
        "DKIM_SELECTOR",
        "DKIM_DOMAIN",
        "DOCTOR_NAMESERVER",
        "BOUNCE_ADDRESS",
        "BOUNCE_IMAP_URL",
        "METRICS_TOKEN",
        "LOG_FORMAT",
        "LOG_LEVEL",
    ):
        if environ.get(name):
            out[name] = environ[name]
    if environ.get("DATABASE_URL"):
        out["SQLALCHEMY_DATABASE_URI"] = environ["DATABASE_URL"]
    if environ.get("MAIL_PORT"):
        out["MAIL_PORT"] = int(environ["MAIL_PORT"])
    for flag in (
        "MAIL_USE_TLS",
        "MAIL_USE_SSL",
        "EMAIL_CHECK_DELIVERABILITY",
        "MAIL_LOOPBACK_ONLY",
        "PACING_ENABLED",
        "PACING_BUSINESS_HOURS_ONLY",
        "RATELIMIT_ENABLED",
    ):
        if environ.get(flag):
            out[flag] = env_flag(environ[flag])
    for name in (
        "PACING_PER_DOMAIN_PER_HOUR",
        "PACING_PER_ADDRESS_PER_HOUR",
        "PACING_BURST_SECONDS",
        "DISPATCH_WINDOW",
        "SWEEP_INTERVAL",
        "SESSION_IDLE_MINUTES",
        "SESSION_MAX_HOURS",
        "RELAY_CHECK_TIMEOUT",
        "CONFIRM_TOKEN_DAYS",
        "RETENTION_DAYS",
        "SENDING_LEASE_SECONDS",
        "MAIL_TIMEOUT",
        "DIGEST_RETRY_MINUTES",
    ):
        if environ.get(name):
            out[name] = float(environ[name])
    for name in (
        "DELIVERY_BATCH_SIZE",
        "MAIL_MAX_EMAILS",
        "MAIL_CAPTURE_PORT",
        "TRUSTED_PROXIES",
        "HSTS_MAX_AGE",
        "CONFIRMATION_MAILS_PER_DAY",
        "DIGEST_HOUR",
        "DIGEST_MAX_SUPPORTERS",
        "DIGEST_MAX_BYTES",
    ):
        if environ.get(name):
            out[name] = int(environ[name])
    if environ.get("RELAY_EXTRA_PORTS"):
        # More ports the admin's relay check may reach, e.g. 2525 or 1025.
        extra = [int(p) for p in environ["RELAY_EXTRA_PORTS"].replace(",", " ").split()]
        out["RELAY_CHECK_PORTS"] = (25, 465, 587, *extra)
    return out


def finish(config: dict[str, Any], instance_path: str) -> None:
    """Derive the settings that depend on others, after all layers are applied."""
    config["SQLALCHEMY_DATABASE_URI"] = database_url(
        config["SQLALCHEMY_DATABASE_URI"], instance_path
    )
    if not config.get("MAIL_SERVER"):
        # No relay configured: the local capture receives everything.
        config["MAIL_SERVER"] = "127.0.0.1"
        config["MAIL_PORT"] = config["MAIL_CAPTURE_PORT"]
        config["MAIL_CAPTURE"] = True
    else:
        config.setdefault("MAIL_CAPTURE", False)
    if not config.get("MAIL_PORT"):
        config["MAIL_PORT"] = 465 if config.get("MAIL_USE_SSL") else 587
    config["RQ_CONNECTION"] = config["REDIS_URL"]
    if not config.get("PUBLIC_URL"):
        config["PUBLIC_URL"] = "http://127.0.0.1:5000"
    if config["PUBLIC_URL"].startswith("https://"):
        # Cookies only over HTTPS: the session cookie carries the CSRF token too.
        config["SESSION_COOKIE_SECURE"] = True
        config["REMEMBER_COOKIE_SECURE"] = True
        config["PREFERRED_URL_SCHEME"] = "https"
    # Flask's own lifetime for a permanent session; staff sessions end sooner (above).
    config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=float(config["SESSION_MAX_HOURS"]))
    if not config.get("RATELIMIT_STORAGE_URI"):
        config["RATELIMIT_STORAGE_URI"] = config["REDIS_URL"]
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = instance_secret_key(instance_path)


def instance_secret_key(instance_path: str) -> str:
    """Read the instance's secret key, creating it (mode 0600) on first use."""
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # atomic: the first process to get here wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def private_files(config: dict[str, Any]) -> None:
    """The SQLite database and the mail capture, readable by their owner only, even if
    they were made before (or by a process with a looser umask)."""
    uri = str(config["SQLALCHEMY_DATABASE_URI"])
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:///:memory:"):
        database = Path(uri.removeprefix("sqlite:///"))
        for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))):
            if path.exists():
                path.chmod(0o600)
    capture = Path(config["MAIL_CAPTURE_DIR"])
    if capture.exists():
        capture.chmod(0o700)
