"""Staff log-in, log-out and password change."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required, logout_user
from werkzeug.wrappers import Response

from .. import audit
from ..db import db
from ..exceptions import InvalidInput
from ..forms import LoginForm, PasswordForm
from ..users import authenticate, end_sessions, set_password, start_session
from . import limiter

bp = Blueprint("auth", __name__)


def _login_limit() -> str:
    return str(current_app.config["RATELIMIT_LOGIN"])


def _account_limit() -> str:
    return str(current_app.config["RATELIMIT_LOGIN_ACCOUNT"])


def _account_key() -> str:
    """The account a sign-in is for, whether or not it exists: the same limit, and the
    same answer, for every address."""
    email = (request.form.get("email") or "").strip().lower()[:254]
    return "login-account:" + hashlib.sha256(email.encode()).hexdigest()


def _failed(response: Response) -> bool:
    return response.status_code == 401


def _safe_next(target: str | None) -> str:
    """Only local paths: never redirect a fresh login to another site."""
    if target and any(ord(c) < 32 or ord(c) == 127 for c in target):
        abort(400, "That link is damaged; log in from the start page.")
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not urlsplit(target).netloc
        and "\\" not in target
    ):
        return target
    return url_for("manage.dashboard")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_account_limit, key_func=_account_key, methods=["POST"], deduct_when=_failed)
def login() -> str | Response | tuple[str, int]:
    target = _safe_next(request.args.get("next"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data or ""
        user = authenticate(email, form.password.data or "")
        if user is not None:
            start_session(user)
            audit.record("sign-in", actor=user.email)
            db.session.commit()
            return redirect(target)
        audit.record("sign-in failed", actor=email.strip().lower() or "(empty)")
        db.session.commit()
        flash("Wrong e-mail or password.", "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout() -> Response:
    """Ends this session, and any copy of its cookie: the user's session version moves on."""
    end_sessions(current_user)
    audit.record("sign-out")
    db.session.commit()
    logout_user()
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> str | Response | tuple[str, int]:
    form = PasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        if authenticate(user.email, form.current.data or "") is None:
            form.current.errors = ["That is not your current password."]
        elif form.new.data != form.repeat.data:
            form.repeat.errors = ["The two new passwords differ."]
        else:
            try:
                set_password(user, form.new.data or "")
            except InvalidInput as e:
                form.new.errors = [e.fields["password"]]
            else:
                audit.record("password changed")
                db.session.commit()
                start_session(user)  # this session goes on; every other one has ended
                flash("Password changed. Every other session of yours has ended.", "ok")
                return redirect(url_for("manage.dashboard"))
        return render_template("auth/password.html", form=form), 422
    return render_template("auth/password.html", form=form)
