"""The naive baseline: one Flask-Mail message per RQ job, as a first version would do."""

from __future__ import annotations

import os

from flask import Flask
from flask_mail import Mail, Message

app = Flask(__name__)
app.config.update(
    MAIL_SERVER="127.0.0.1",
    MAIL_PORT=int(os.environ["BENCH_SINK_PORT"]),
    MAIL_DEFAULT_SENDER="appeals@example.org",
)
mail = Mail(app)

BODY = "Dear Minister,\n\n" + ("Please do not extradite Aleksandr Pavlov to Kazakhstan. " * 50)


def send_one(i: int) -> None:
    assert app.config["MAIL_SERVER"] == "127.0.0.1"  # never anything but loopback
    with app.app_context():
        mail.send(
            Message(
                subject=f"Appeal {i}",
                sender=(f"Supporter {i} via Org", "appeals@example.org"),
                recipients=["ministro@mju.es"],
                reply_to=f"s{i}@example.org",
                body=BODY,
                html=f"<p>{BODY}</p>",
            )
        )
