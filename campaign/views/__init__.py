"""Blueprints, CSRF, rate limits and error pages. Views are thin: parse, call one
service function, map domain errors to status codes."""

from __future__ import annotations

from flask import Flask, Request, Response, jsonify, render_template, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, strategy="moving-window")


def _wants_json() -> bool:
    return request.path.startswith("/api/")


class _SessionInterface(SecureCookieSessionInterface):
    """The cookie session, except on the JSON API, which never uses one: no cookie is
    read or written there, and no signer is built for each request."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith("/api/"):
            return self.null_session_class()
        return super().open_session(app, request)


def register_views(app: Flask) -> None:
    from . import admin, api, auth, manage, public

    app.session_interface = _SessionInterface()
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(manage.bp)
    app.register_blueprint(admin.bp)
    csrf.exempt(api.bp)  # JSON only: browsers cannot send it cross-site without CORS

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError) -> tuple[str, int]:
        return render_template(
            "error.html",
            code=400,
            message="This form has expired or was not sent from our page. "
            "Please go back, reload the page and try again; "
            "nothing you typed was sent.",
        ), 400

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> tuple[Response | str, int]:
        code = e.code or 500
        if _wants_json():
            return jsonify(
                error=e.name.lower().replace(" ", "_"), message=e.description, fields={}
            ), code
        return render_template("error.html", code=code, message=e.description), code

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> tuple[Response | str, int]:
        app.logger.exception("unhandled error")
        if _wants_json():
            return jsonify(
                error="internal_error",
                message="Something went wrong on our side; nothing was lost, please try again.",
                fields={},
            ), 500
        return render_template(
            "error.html", code=500, message="Something went wrong on our side."
        ), 500

    https = app.config["PUBLIC_URL"].startswith("https://")
    hsts = f"max-age={int(app.config['HSTS_MAX_AGE'])}"

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        headers.setdefault("X-Content-Type-Options", "nosniff")
        # Same-origin requests carry the Referer, which Flask-WTF's CSRF check requires
        # on HTTPS; no other site ever gets one (a confirm page's URL holds its token).
        headers.setdefault("Referrer-Policy", "same-origin")
        # Pages name supporters and staff: no browser or proxy keeps a copy.
        headers.setdefault("Cache-Control", "no-store")
        if https:
            headers.setdefault("Strict-Transport-Security", hsts)
        return response
