"""The application factory: ``flask --app app run``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. Config layers: defaults → ``instance/config.py`` → environment.

    A test config replaces the last two, so a developer's environment never leaks
    into tests.
    """
    from campaign import campaigns, cli, config, i18n, logs, metrics, users
    from campaign.db import db, migrate
    from campaign.delivery.queue import rq
    from campaign.views import register_views

    # Everything this process writes (the database, the mail capture, the secret key,
    # logs of its own) is for its owner only: it names people who protest.
    os.umask(0o077)
    app = Flask(
        __name__,
        instance_path=os.environ.get("INSTANCE_PATH") or None,
        instance_relative_config=True,
    )
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    os.chmod(app.instance_path, 0o700)
    app.config.update(config.defaults(app.instance_path))
    sources: dict[str, str] = {}
    if test_config is None:
        before = dict(app.config)
        app.config.from_pyfile("config.py", silent=True)
        sources.update({k: "instance file" for k, v in app.config.items() if before.get(k) != v})
        from_env = config.from_environment(os.environ)
        app.config.update(from_env)
        sources.update(dict.fromkeys(from_env, "environment"))
    else:
        app.config.update(test_config)
        sources.update(dict.fromkeys(test_config, "test config"))
    app.config["CONFIG_SOURCES"] = sources
    config.finish(app.config, app.instance_path)
    config.private_files(app.config)

    if app.config["TRUSTED_PROXIES"]:
        # Behind N proxies, the client is the address the Nth proxy saw, and the scheme
        # what it was told; a header the client sent itself is never believed.
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    logs.init_app(app)
    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=os.path.join(os.path.dirname(__file__), "migrations"),
        render_as_batch=True,
    )
    rq.init_app(app)
    i18n.init_app(app)
    campaigns.init_app(app)
    users.init_app(app)
    register_views(app)
    metrics.init_app(app)
    cli.init_app(app)
    return app
