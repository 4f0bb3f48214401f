"""The local mail capture: an SMTP server on loopback that keeps every message
in a Maildir, so a newcomer (and managers, at ``/manage/mail``) can read what
a real relay would have received, envelope included.
"""

from __future__ import annotations

import email
import mailbox
import re
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

ENVELOPE_FROM = "X-Capture-Envelope-From"
ENVELOPE_TO = "X-Capture-Envelope-To"


class MaildirHandler:
    """aiosmtpd handler: store each message with its envelope as extra headers."""

    def __init__(self, directory: str | Path) -> None:
        # mailbox.Maildir only makes tmp/new/cur when it creates the directory itself;
        # a directory that already exists (a mounted volume, made by hand) needs them too.
        for sub in ("tmp", "new", "cur"):
            (Path(directory) / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        Path(directory).chmod(0o700)  # whole letters, with supporters' names
        self.maildir = mailbox.Maildir(str(directory), create=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        head = (
            f"{ENVELOPE_FROM}: {envelope.mail_from}\r\n"
            f"{ENVELOPE_TO}: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        self.maildir.add(head + envelope.original_content)  # 0600 under the app's umask
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Captured:
    key: str
    received: float
    envelope_from: str
    envelope_to: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else ""


def _files(directory: str | Path) -> dict[str, Path]:
    """Maildir key → file, for every message in ``new/`` and ``cur/``."""
    files: dict[str, Path] = {}
    for sub in ("new", "cur"):
        folder = Path(directory) / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if not path.name.startswith("."):
                    files[path.name.split(":", 1)[0]] = path
    return files


def _load(key: str, path: Path) -> Captured:
    message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return Captured(
        key=key,
        received=path.stat().st_mtime,
        envelope_from=str(message.get(ENVELOPE_FROM, "")),
        envelope_to=[a.strip() for a in str(message.get(ENVELOPE_TO, "")).split(",") if a],
        message=message,
    )


def count(directory: str | Path) -> int:
    return len(_files(directory))


_KEY_TIME = re.compile(r"^(\d+)\.M(\d+)P\d+Q(\d+)")


def _key_order(key: str) -> tuple[int, int, int]:
    """(seconds, microseconds, counter) from a key made by ``mailbox.Maildir``: the
    order of arrival when file times tie (coarse file-system clocks), compared as
    numbers, not text ("M99999" is before "M100000")."""
    found = _KEY_TIME.match(key)
    return (int(found[1]), int(found[2]), int(found[3])) if found else (0, 0, 0)


def latest(directory: str | Path, limit: int = 50) -> list[Captured]:
    """The newest captured messages first; only those are read and parsed."""
    stamped = sorted(
        ((p.stat().st_mtime, _key_order(k), k, p) for k, p in _files(directory).items()),
        reverse=True,
    )
    return [_load(k, p) for _, _, k, p in stamped[:limit]]


def get(directory: str | Path, key: str) -> Captured | None:
    path = _files(directory).get(key)
    return _load(key, path) if path is not None else None


def serve(directory: str | Path, host: str = "127.0.0.1", port: int = 1025) -> None:
    """Run the capture server in the foreground until interrupted."""
    from aiosmtpd.controller import Controller

    controller = Controller(
        MaildirHandler(directory), hostname=host, port=port, data_size_limit=10 * 1024 * 1024
    )
    controller.start()
    print(f"mail capture listening on {host}:{port}, storing in {directory}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
