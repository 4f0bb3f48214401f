"""Staff accounts: managers and admins. Supporters never have an account.

A staff session ends when its user logs out, changes password or is disabled (each
raises the user's session version, which every session cookie carries and every
request checks), after ``SESSION_IDLE_MINUTES`` without a request, and
``SESSION_MAX_HOURS`` after signing in, whatever happens.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from email_validator import EmailNotValidError
from flask import Flask, abort, current_app, flash, redirect, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from .db import db
from .exceptions import InvalidInput
from .intake import normalise_email
from .models import Role, User

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."
login_manager.session_protection = "basic"

F = TypeVar("F", bound=Callable[..., Any])
PASSWORD_MIN = 12
PASSWORD_MAX = 200

# Pages a user who must choose a new password may still reach.
_OPEN_WHILE_PASSWORD_EXPIRED = {"auth.change_password", "auth.logout", "static"}


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    app.before_request(_session_limits)


@login_manager.user_loader
def _load(session_id: str) -> User | None:
    """``id:version``: a cookie from before the last log-out, password change or
    disabling names an old version, and opens nothing."""
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.active or user.session_version != int(version):
        return None
    return user


def _session_limits() -> Response | None:
    if "_user_id" not in session:
        return None
    now = time.time()
    config = current_app.config
    idle = float(config["SESSION_IDLE_MINUTES"]) * 60
    lifetime = float(config["SESSION_MAX_HOURS"]) * 3600
    started, seen = session.get("signed_in_at", 0), session.get("seen_at", 0)
    if now - seen > idle or now - started > lifetime:
        logout_user()
        session.clear()
        flash("Your session ended; please log in again.", "error")
        return None
    session["seen_at"] = now
    if (
        current_user.is_authenticated
        and current_user.must_change_password
        and request.endpoint not in _OPEN_WHILE_PASSWORD_EXPIRED
    ):
        flash("Choose a new password before you go on.", "error")
        return redirect(url_for("auth.change_password"))
    return None


def start_session(user: User) -> None:
    """Sign ``user`` in, in a session cookie of its own with the timestamps above."""
    session.clear()  # nothing from before sign-in carries over into the staff session
    login_user(user)
    session["signed_in_at"] = session["seen_at"] = time.time()


def end_sessions(user: User) -> None:
    """End every session of this user, this one included. The caller commits."""
    user.session_version += 1


def _check_password(password: str | None) -> str | None:
    if password is not None and not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"Use {PASSWORD_MIN} to {PASSWORD_MAX} characters."
    return None


def new_password() -> str:
    return secrets.token_urlsafe(12)


def create_user(
    email: str, role: str, password: str | None = None, *, must_change: bool = False
) -> tuple[User, str]:
    """Create a staff account; returns it with its password (generated if not given)."""
    errors: dict[str, str] = {}
    try:
        email = normalise_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as e:
        errors["email"] = str(e)
    if role not in Role.ALL:
        errors["role"] = f"Role must be one of: {', '.join(Role.ALL)}."
    if problem := _check_password(password):
        errors["password"] = problem
    if not errors and db.session.scalar(db.select(User).filter_by(email=email)):
        errors["email"] = "A user with this address exists already."
    if errors:
        raise InvalidInput(errors)
    password = password or new_password()
    user = User(
        email=email,
        role=role,
        password_hash=generate_password_hash(password),
        must_change_password=must_change,
        session_version=1,
    )
    db.session.add(user)
    db.session.commit()
    return user, password


def set_password(user: User, password: str, *, must_change: bool = False) -> None:
    """A new password ends every session of the user. The caller commits."""
    if problem := _check_password(password):
        raise InvalidInput({"password": problem})
    user.password_hash = generate_password_hash(password)
    user.must_change_password = must_change
    end_sessions(user)


def find(email: str) -> User | None:
    return db.session.scalar(db.select(User).filter_by(email=email.strip().lower()))


def authenticate(email: str, password: str) -> User | None:
    user = find(email)
    if user is None:
        # Same work either way, so response time does not reveal who has an account.
        check_password_hash(_dummy_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.active:
        return None
    return user


@functools.cache
def _dummy_hash() -> str:
    """Made on first use: hashing costs ~0.1 s, which every process would pay at import."""
    return generate_password_hash("not-a-real-password")


def role_required(role: str) -> Callable[[F], F]:
    """Allow logged-in staff with ``role`` (admins may do everything managers may)."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if role == Role.ADMIN and not current_user.is_admin:
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
