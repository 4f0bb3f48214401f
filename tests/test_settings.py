"""campaign.settings (the relay settings an admin edits) and the ``users`` CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.security import check_password_hash

from app import create_app
from campaign import settings
from campaign.db import db
from campaign.models import Role, Setting, User
from campaign.users import authenticate, create_user
from conftest import capture_config, fresh_app


def keyed(secret: str) -> Flask:
    """A bare app with only a secret key: enough for the encryption helpers."""
    app = Flask(__name__)
    app.secret_key = secret
    return app


# --- encryption --------------------------------------------------------------------------


@pytest.mark.parametrize("plain", ["hunter2", "pässwörd 🔑 with spaces", "x" * 512, "=:+/"])
def test_encrypt_decrypt_round_trip(plain):
    with keyed("key-one").app_context():
        token = settings.encrypt_secret(plain)
        assert plain not in token
        assert settings.decrypt_secret(token) == plain
        # Random IV: the same secret never encrypts to the same text twice.
        assert settings.encrypt_secret(plain) != token


def test_decrypt_with_another_secret_key_is_none():
    with keyed("key-one").app_context():
        token = settings.encrypt_secret("relay-password")
    with keyed("key-two").app_context():
        assert settings.decrypt_secret(token) is None
    with keyed("key-one").app_context():
        assert settings.decrypt_secret(token) == "relay-password"


@pytest.mark.parametrize("garbage", ["", "not-a-token", "gAAAAA", "ünïcode", "a" * 200])
def test_decrypt_garbage_is_none(garbage):
    with keyed("key-one").app_context():
        assert settings.decrypt_secret(garbage) is None


# --- effective relay settings ------------------------------------------------------------


def test_relay_settings_follow_the_test_config(app, smtp):
    with app.app_context():
        relay = settings.relay_settings()
    assert (relay.host, relay.port, relay.security) == ("127.0.0.1", smtp.port, "none")
    assert relay.sender == "appeals@amnesty.test"
    assert relay.org_name == "Amnesty Test Section"
    assert relay.username is None and relay.password is None
    assert relay.capture is False
    assert relay.sources == {
        "relay_host": "test config",
        "relay_port": "test config",
        "relay_security": "default",
        "relay_username": "default",
        "relay_password": "default",
        "relay_sender": "test config",
        "org_name": "test config",
    }


def test_saved_values_win_and_removing_them_falls_back(app, smtp):
    with app.app_context():
        settings.save(
            {"relay_port": 2525, "relay_username": "relay-user", "relay_password": "s3cret"},
            by="admin@example.org",
        )
        relay = settings.relay_settings()
        assert relay.port == 2525
        assert relay.username == "relay-user"
        assert relay.password == "s3cret"
        assert relay.sources["relay_port"] == "admin screen"
        assert relay.sources["relay_password"] == "admin screen"
        assert relay.sources["relay_host"] == "test config"
        stored = db.session.get(Setting, "relay_password")
        assert stored.value != "s3cret" and "s3cret" not in str(stored.value)
        assert stored.updated_by == "admin@example.org"

        settings.save({"relay_port": None, "relay_password": None}, by="admin@example.org")
        relay = settings.relay_settings()
        assert relay.port == smtp.port
        assert relay.sources["relay_port"] == "test config"
        assert relay.password is None
        assert set(settings.stored()) == {"relay_username"}


def test_unknown_setting_is_refused(app):
    with app.app_context(), pytest.raises(KeyError):
        settings.save({"MAIL_SERVER": "evil.example"}, by="admin@example.org")


def test_password_saved_under_another_secret_key_is_ignored(app, backend, database_urls):
    with app.app_context():
        settings.save({"relay_password": "s3cret"}, by="admin@example.org")
    other = create_app({**app.config, "SECRET_KEY": "a-rotated-secret-key"})
    with other.app_context():
        assert settings.relay_settings().password is None
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def capture_app(
    backend: str, database_urls: dict[str, str], redis: Any, redis_url: str, tmp_path: Path
) -> Iterator[Flask]:
    """No MAIL_SERVER: the local mail capture receives everything."""
    with fresh_app(capture_config(database_urls[backend], redis_url, tmp_path)) as app:
        yield app


def test_capture_mode_labels(capture_app):
    port = capture_app.config["MAIL_CAPTURE_PORT"]
    with capture_app.app_context():
        relay = settings.relay_settings()
        assert relay.capture is True
        assert (relay.host, relay.port) == ("127.0.0.1", port)
        assert relay.sources["relay_host"] == "default (local mail capture)"
        assert relay.sources["relay_port"] == "default (local mail capture)"

        # A port saved on the admin screen is the admin's, even while capturing.
        settings.save({"relay_port": 2526}, by="admin@example.org")
        relay = settings.relay_settings()
        assert relay.port == 2526
        assert relay.sources["relay_port"] == "admin screen"

        # A saved host ends capture mode.
        settings.save({"relay_host": "smtp.example.org"}, by="admin@example.org")
        relay = settings.relay_settings()
        assert relay.capture is False
        assert relay.host == "smtp.example.org"
        assert relay.sources["relay_host"] == "admin screen"


# --- the users CLI -----------------------------------------------------------------------


def _password(output: str) -> str:
    found = re.findall(r"password:? (\S+)", output)
    assert len(found) == 1, output
    return found[0]


def _users(app: Flask) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.scalars(db.select(User).order_by(User.email)).all()
        return [(u.email, u.role) for u in rows]


def test_cli_users_create(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "new.manager@example.org"])
    assert result.exit_code == 0, result.output
    assert "created manager new.manager@example.org" in result.output
    password = _password(result.output)
    assert len(password) >= 12
    assert result.output.count(password) == 1
    assert _users(app) == [("new.manager@example.org", Role.MANAGER)]
    with app.app_context():
        user = authenticate("new.manager@example.org", password)
        assert user is not None and user.role == Role.MANAGER
        assert user.password_hash != password
        assert check_password_hash(user.password_hash, password)

    listed = runner.invoke(args=["users", "list"])
    assert listed.exit_code == 0
    assert "new.manager@example.org\tmanager\tactive" in listed.output
    assert password not in listed.output


def test_cli_users_create_admin_with_a_chosen_password(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["users", "create", "boss@example.org", "--role", "admin"],
        env={"NEW_USER_PASSWORD": "a long enough password"},
    )
    assert result.exit_code == 0, result.output
    assert _users(app) == [("boss@example.org", Role.ADMIN)]
    with app.app_context():
        assert authenticate("boss@example.org", "a long enough password") is not None


def test_cli_users_create_refuses_a_duplicate(app):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "create", "dup@example.org"]).exit_code == 0
    result = runner.invoke(args=["users", "create", "dup@example.org", "--role", "admin"])
    assert result.exit_code != 0
    assert "Error:" in result.output
    assert "exists already" in result.output
    assert "password" not in result.output.lower()
    assert "Traceback" not in result.output
    assert _users(app) == [("dup@example.org", Role.MANAGER)]


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.org", "x@exa mple.org"])
def test_cli_users_create_refuses_a_bad_email(app, email):
    result = app.test_cli_runner().invoke(args=["users", "create", email])
    assert result.exit_code != 0
    assert "Error: email:" in result.output
    assert "Traceback" not in result.output
    assert _users(app) == []


def test_cli_users_create_refuses_a_short_password_and_a_bad_role(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "x@example.org", "--password", "short"])
    assert result.exit_code != 0
    assert "Use 12 to 200 characters." in result.output
    result = runner.invoke(args=["users", "create", "x@example.org", "--role", "root"])
    assert result.exit_code == 2
    assert "'root' is not one of" in result.output
    assert _users(app) == []


def test_cli_ensure_admin_only_on_an_empty_database(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["users", "ensure-admin"])
    assert first.exit_code == 0, first.output
    [(email, role)] = _users(app)
    assert role == Role.ADMIN
    assert email in first.output
    password = _password(first.output)
    with app.app_context():
        assert authenticate(email, password) is not None

    again = runner.invoke(args=["users", "ensure-admin", "--email", "other@example.org"])
    assert again.exit_code == 0
    assert again.output == ""
    assert _users(app) == [(email, Role.ADMIN)]


def test_cli_ensure_admin_leaves_existing_staff_alone(app):
    with app.app_context():
        create_user("manager@example.org", Role.MANAGER)
    result = app.test_cli_runner().invoke(
        args=["users", "ensure-admin", "--email", "a@example.org"]
    )
    assert result.exit_code == 0
    assert result.output == ""
    assert _users(app) == [("manager@example.org", Role.MANAGER)]


def test_cli_ensure_admin_with_a_chosen_address(app):
    result = app.test_cli_runner().invoke(
        args=["users", "ensure-admin", "--email", "First.Admin@Example.org"]
    )
    assert result.exit_code == 0, result.output
    [(email, role)] = _users(app)
    assert role == Role.ADMIN
    with app.app_context():
        assert authenticate("First.Admin@Example.org", _password(result.output)) is not None


def test_cli_ensure_admin_refuses_a_bad_address_clearly(app):
    result = app.test_cli_runner().invoke(args=["users", "ensure-admin", "--email", "nope"])
    assert result.exit_code != 0
    assert "Error: email:" in result.output
    assert "Traceback" not in result.output
    assert _users(app) == []


def test_the_documented_environment_settings_are_read():
    """The settings the README and .env.example name, as the environment spells them."""
    from campaign.config import from_environment

    got = from_environment(
        {
            "TRUSTED_PROXIES": "1",
            "RELAY_EXTRA_PORTS": "2525, 1025",
            "RELAY_CHECK_TIMEOUT": "3",
            "SESSION_IDLE_MINUTES": "15",
            "SESSION_MAX_HOURS": "8",
            "RATELIMIT_LOGIN_ACCOUNT": "5 per hour",
            "CONFIRM_TOKEN_DAYS": "3",
            "CONFIRMATION_MAILS_PER_DAY": "2",
            "RETENTION_DAYS": "14",
            "DISPATCH_WINDOW": "0.1",
            "MAIL_CA_FILE": "/etc/ssl/private-ca.pem",
            "MAIL_CAPTURE_PORT": "2025",
            "RATELIMIT_ENABLED": "false",
            "BOUNCE_ADDRESS": "bounces@example.org",
            "BOUNCE_IMAP_URL": "imaps://bounces:pw@imap.example.org/INBOX",
            "DIGEST_HOUR": "7",
            "DIGEST_MAX_SUPPORTERS": "1000",
            "DIGEST_MAX_BYTES": "2000000",
            "DIGEST_RETRY_MINUTES": "5",
        }
    )
    assert got == {
        "TRUSTED_PROXIES": 1,
        "RELAY_CHECK_PORTS": (25, 465, 587, 2525, 1025),
        "RELAY_CHECK_TIMEOUT": 3.0,
        "SESSION_IDLE_MINUTES": 15.0,
        "SESSION_MAX_HOURS": 8.0,
        "RATELIMIT_LOGIN_ACCOUNT": "5 per hour",
        "CONFIRM_TOKEN_DAYS": 3.0,
        "CONFIRMATION_MAILS_PER_DAY": 2,
        "RETENTION_DAYS": 14.0,
        "DISPATCH_WINDOW": 0.1,
        "MAIL_CA_FILE": "/etc/ssl/private-ca.pem",
        "MAIL_CAPTURE_PORT": 2025,
        "RATELIMIT_ENABLED": False,
        "BOUNCE_ADDRESS": "bounces@example.org",
        "BOUNCE_IMAP_URL": "imaps://bounces:pw@imap.example.org/INBOX",
        "DIGEST_HOUR": 7,
        "DIGEST_MAX_SUPPORTERS": 1000,
        "DIGEST_MAX_BYTES": 2_000_000,
        "DIGEST_RETRY_MINUTES": 5.0,
    }


def test_web_processes_and_threads_follow_the_environment(monkeypatch):
    from campaign.devstack import web_argv

    monkeypatch.setenv("WEB_WORKERS", "3")
    monkeypatch.setenv("WEB_THREADS", "6")
    argv = web_argv("127.0.0.1:5000")
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--threads") + 1] == "6"
    assert argv[argv.index("--logger-class") + 1] == "campaign.weblog.AccessLogger"
