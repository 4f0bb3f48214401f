"""Staff accounts: managers and admins. Supporters never have an account."""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from email_validator import EmailNotValidError
from flask import Flask, abort
from flask_login import LoginManager, current_user
from werkzeug.security import check_password_hash, generate_password_hash

from .db import db
from .exceptions import InvalidInput
from .intake import normalise_email
from .models import Role, User

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."

F = TypeVar("F", bound=Callable[..., Any])
PASSWORD_MIN = 12


def init_app(app: Flask) -> None:
    login_manager.init_app(app)


@login_manager.user_loader
def _load(user_id: str) -> User | None:
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


def create_user(email: str, role: str, password: str | None = None) -> tuple[User, str]:
    """Create a staff account; returns it with its password (generated if not given)."""
    errors: dict[str, str] = {}
    try:
        email = normalise_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as e:
        errors["email"] = str(e)
    if role not in Role.ALL:
        errors["role"] = f"Role must be one of: {', '.join(Role.ALL)}."
    if password is not None and len(password) < PASSWORD_MIN:
        errors["password"] = f"Use at least {PASSWORD_MIN} characters."
    if not errors and db.session.scalar(db.select(User).filter_by(email=email)):
        errors["email"] = "A user with this address exists already."
    if errors:
        raise InvalidInput(errors)
    password = password or secrets.token_urlsafe(12)
    user = User(email=email, role=role, password_hash=generate_password_hash(password))
    db.session.add(user)
    db.session.commit()
    return user, password


def authenticate(email: str, password: str) -> User | None:
    user = db.session.scalar(db.select(User).filter_by(email=email.strip().lower()))
    if user is None:
        # Same work either way, so response time does not reveal who has an account.
        check_password_hash(_dummy_hash(), password)
        return None
    if not user.active or not check_password_hash(user.password_hash, password):
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
