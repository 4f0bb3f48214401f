"""Blueprints, CSRF, rate limits and error pages. Views are thin: parse, call one
service function, map domain errors to status codes."""

from __future__ import annotations

from flask import Flask, Request, Response, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

csrf = CSRFProtect()

UNLIMITED = frozenset(
    {"api.confirm", "api.appeal_status", "health.healthz", "health.readyz", "health.metrics"}
)
"""The JSON endpoints that carry no rate limit and take the most traffic: a confirm
per supporter, and their status; and the probes and scrapes of campaign/health.py."""


class _Limiter(Limiter):
    """Flask-Limiter, except that a request to an endpoint in :data:`UNLIMITED` skips
    it: resolving and evaluating that endpoint's limits (none) took a tenth of the
    confirm's time."""

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if in_middleware and request.endpoint in UNLIMITED:
            return
        super()._check_request_limit(callable_name, in_middleware)

    def init_app(self, app: Flask) -> None:
        # Each app decides for itself: Flask-Limiter would otherwise carry the last
        # app's RATELIMIT_ENABLED over as the next one's default, and the last storage
        # outage (which switched it to its in-memory fallback) too.
        self.enabled = True
        self._storage_dead = False
        super().init_app(app)


limiter = _Limiter(key_func=get_remote_address, strategy="moving-window")


def _wants_json() -> bool:
    return request.path.startswith("/api/")


_SESSIONLESS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Probes and scrapes (campaign/health.py): no cookie read or written."""


class _SessionInterface(SecureCookieSessionInterface):
    """The cookie session, except on the JSON API, which never uses one: no cookie is
    read or written there, and no signer is built for each request."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith("/api/") or request.path in _SESSIONLESS:
            return self.null_session_class()
        return super().open_session(app, request)


_GENERIC = {
    400: _l("The request could not be understood. Please go back and try again."),
    403: _l("You are not allowed to see this page."),
    404: _l("There is nothing at this address. Please check the link."),
    405: _l("This page cannot be used that way."),
    413: _l("That was more text than we can take. Please shorten it and try again."),
    429: _l("Too many requests from here. Please wait a moment and try again."),
    500: _l("Something went wrong on our side."),
}


def _describe(e: HTTPException) -> str:
    """The error's message in the interface language: our own ``abort(code, _(…))``
    messages are translated where they are raised; Werkzeug's stock English ones (and
    a rate limit's "10 per 1 minute") give way to a sentence of ours."""
    if e.code == 429 or e.description == type(e).description:
        generic = _GENERIC.get(e.code or 500)
        if generic is not None:
            return str(generic)
    return str(e.description or "")


def register_views(app: Flask) -> None:
    from .. import health
    from . import admin, api, auth, manage, public

    app.session_interface = _SessionInterface()
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(manage.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(health.bp)  # GET only: nothing for CSRF to guard
    csrf.exempt(api.bp)  # JSON only: browsers cannot send it cross-site without CORS

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError) -> tuple[str, int]:
        return render_template(
            "error.html",
            code=400,
            message=_(
                "This form has expired or was not sent from our page. "
                "Please go back, reload the page and try again; "
                "nothing you typed was sent."
            ),
        ), 400

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Response | str, int]:
        code = e.code or 500
        message = _describe(e)
        if _wants_json():
            return jsonify(error=e.name.lower().replace(" ", "_"), message=message, fields={}), code
        return render_template("error.html", code=code, message=message), code

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> tuple[Response | str, int]:
        app.logger.exception("unhandled error")
        if _wants_json():
            return jsonify(
                error="internal_error",
                message=_("Something went wrong on our side; nothing was lost, please try again."),
                fields={},
            ), 500
        return render_template(
            "error.html", code=500, message=_("Something went wrong on our side.")
        ), 500

    https = app.config["PUBLIC_URL"].startswith("https://")
    hsts = f"max-age={int(app.config['HSTS_MAX_AGE'])}"

    defaults = [
        (
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("X-Content-Type-Options", "nosniff"),
        # Same-origin requests carry the Referer, which Flask-WTF's CSRF check requires
        # on HTTPS; no other site ever gets one (a confirm page's URL holds its token).
        ("Referrer-Policy", "same-origin"),
        # Pages name supporters and staff: no browser or proxy keeps a copy.
        ("Cache-Control", "no-store"),
    ]
    if https:
        defaults.append(("Strict-Transport-Security", hsts))

    @app.after_request
    def security_headers(response: Response) -> Response:
        """Each header a view did not set itself, added in one pass over the headers."""
        headers = response.headers
        present = {name.lower() for name in headers.keys()}  # noqa: SIM118 - Headers, not a dict
        headers.extend([(k, v) for k, v in defaults if k.lower() not in present])
        return response
