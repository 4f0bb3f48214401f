"""The baseline for the confirm endpoint: a bare Flask JSON route, served by gunicorn
with the same settings as the app (``campaign.devstack.web_argv``)."""

from __future__ import annotations

from flask import Flask, jsonify


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/api/v1/confirm/<token>")
    def confirm(token: str):  # noqa: ANN202
        return jsonify(id=token[:8], status="queued"), 200

    return app
