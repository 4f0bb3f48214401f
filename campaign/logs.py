"""Logging: ``LOG_FORMAT=json`` writes one JSON object per line (time, level, logger,
message, and any ``extra=`` fields), for a log collector; the default is plain text.

What is logged at INFO names no supporter: appeal ids, job ids, counts and states.
Names and e-mail addresses never go into a log message at any level in this code base.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from flask import Flask

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)
"""Attributes every record has; anything else on a record came from ``extra=``."""

_HANDLER_MARK = "_campaign_json"


class JsonFormatter(logging.Formatter):
    """One line of JSON per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = (
                    value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
                )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii: a CR or LF in a message can never start a new log line.
        return json.dumps(out, ensure_ascii=True)


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure(log_format: str, level: str = "INFO") -> None:
    """Send every logger's records (the app's, RQ's, gunicorn's error log) through one
    JSON handler on the root logger. Idempotent: the app may be built twice in a process."""
    if log_format.lower() != "json":
        return
    root = logging.getLogger()
    if not any(getattr(h, _HANDLER_MARK, False) for h in root.handlers):
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(json_handler())
    root.setLevel(level.upper())
    # Libraries that attach their own text handlers: theirs go, the root's JSON stays.
    for name in ("rq.worker", "rq", "gunicorn.error", "flask.app"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def init_app(app: Flask) -> None:
    configure(
        str(app.config.get("LOG_FORMAT") or "text"), str(app.config.get("LOG_LEVEL") or "INFO")
    )
    if str(app.config.get("LOG_FORMAT") or "").lower() == "json":
        # Flask's default handler writes text; the root's JSON handler takes its place.
        from flask.logging import default_handler

        app.logger.removeHandler(default_handler)
        app.logger.propagate = True
