"""The deliverability guard: every campaign's letters, in every language, with every
subject line and every phrasing of every paragraph at least once, and each
confirmation, notice and receipt in every interface language, are built as the
workers build them (signed, when a key is set) and scored by Debian's SpamAssassin
with local tests only (``spamassassin -L``: no network). Each must stay at or under
``LIMIT``; today they score 0.0.

All messages go to one SpamAssassin run as an mbox: its start-up (loading the rules)
costs seconds, scoring a message milliseconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask_babel import force_locale

from campaign.delivery.receipts import receipt_message
from campaign.delivery.recipients import Copy
from campaign.dkim import create_key
from campaign.i18n import INTERFACE_LANGUAGES as LANGUAGES
from campaign.letters import choices_of
from campaign.mail import appeal_message, confirmation_message, notice_message
from campaign.models import Delivery, Status
from campaign.settings import relay_settings
from conftest import _base_config, fresh_app

LIMIT = 0.5
SPAMASSASSIN = shutil.which("spamassassin")

pytestmark = pytest.mark.skipif(
    SPAMASSASSIN is None,
    reason="Debian's spamassassin is not installed (apt-get install spamassassin; .ci/run does)",
)


@pytest.fixture
def mail_app(database_urls, redis_url, tmp_path, monkeypatch) -> Iterator[Any]:
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    config = _base_config(database_urls["sqlite"], redis_url, 1)
    with fresh_app(config) as app:
        create_key(app.instance_path, "appeals", "amnesty.test")  # signed, as in production
        yield app


def _appeal(slug: str, language: str, i: int, email: str) -> SimpleNamespace:
    """An appeal row's fields, as a worker reads them (data, not a stand-in for code)."""
    written = datetime(2026, 9, 1, 10, i % 60, tzinfo=UTC)
    return SimpleNamespace(
        id=i,
        campaign=slug,
        public_id=f"p{i:06d}",
        name=["Ana García", "Jean Dupont", "Sofia Rossi", "Jan de Vries"][i % 4],
        email=email,
        language=language,
        country=["GB", "ES", "FR", "DE", "IT", "PT", "NL", "BE"][i % 8],
        message=None if i % 3 else "Les escribo como ciudadana preocupada.",
        confirmed_at=written,
        created_at=written,
        status=Status.SENT,
    )


def _covering_seeds(wording: Any) -> list[str]:
    """Supporter addresses whose letters, together, use every subject line and every
    phrasing of every paragraph (the choices are a function of the address)."""
    wanted = {("subject", s) for s in range(len(wording.subjects))}
    wanted |= {(p, k) for p, n in enumerate(wording.shape) for k in range(n)}
    seeds = []
    for i in range(100_000):
        seed = f"supporter{i}@example.org"
        subject, paragraphs = choices_of(seed, wording)
        gives = {("subject", subject), *enumerate(paragraphs)} & wanted
        if gives:
            seeds.append(seed)
            wanted -= gives
        if not wanted:
            return seeds
    raise AssertionError(f"no addresses cover {sorted(wanted)}")


def _messages(app: Any) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    with app.app_context(), app.test_request_context():
        relay = relay_settings()
        n = 0
        for slug, campaign in app.extensions["campaigns"].items():
            for language, wording in campaign.wordings.items():
                seeds = _covering_seeds(wording)
                assert len(seeds) >= max(wording.shape)  # every phrasing is in some letter
                for seed in seeds:
                    n += 1
                    appeal = _appeal(slug, language, n, seed)
                    out.append(
                        (f"{slug} {language} letter {seed}", appeal_message(appeal, relay).data)
                    )
            for language in LANGUAGES:
                n += 1
                appeal = _appeal(slug, language, n, f"ana{n}@example.org")
                copies = [Copy("ministro@mju.es", "Ministro", "to", status=Delivery.ACCEPTED)]
                with force_locale(language):
                    out.append(
                        (
                            f"{slug} {language} confirmation",
                            confirmation_message(appeal, "t" * 43, relay).data,
                        )
                    )
                    out.append((f"{slug} {language} notice", notice_message(appeal, relay).data))
                    out.append(
                        (
                            f"{slug} {language} receipt",
                            receipt_message(appeal, copies, relay, []).data,
                        )
                    )
    return out


def _scores(messages: list[tuple[str, bytes]], home: Path) -> list[float]:
    """Each message's score, in order. SpamAssassin sorts an mbox by date, so each
    message carries its index in a header of its own, found again in the output."""
    separator = b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n"
    mbox = b"".join(
        separator
        + f"X-Guard-Index: {i}\n".encode()
        + re.sub(rb"(?m)^(>*From )", rb">\1", data.replace(b"\r\n", b"\n"))
        + b"\n"
        for i, (_, data) in enumerate(messages)
    )
    result = subprocess.run(
        [SPAMASSASSIN, "-L", "--mbox"],
        input=mbox,
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=600,
        check=True,
    )
    scores: dict[int, float] = {}
    for chunk in result.stdout.split(separator)[1:]:
        index = re.search(rb"(?m)^X-Guard-Index: (\d+)$", chunk)
        score = re.search(rb"(?m)^X-Spam-Status: \w+, score=(-?[\d.]+)", chunk)
        assert index and score, chunk[:2000]
        scores[int(index.group(1))] = float(score.group(1))
    assert sorted(scores) == list(range(len(messages))), result.stderr.decode()[-2000:]
    return [scores[i] for i in range(len(messages))]


def test_every_letter_and_supporter_mail_scores_at_most_half_a_point(mail_app, tmp_path):
    messages = _messages(mail_app)
    languages = {name.split()[1] for name, _ in messages}
    assert languages >= set(LANGUAGES)  # all eight
    assert all(data.startswith(b"DKIM-Signature:") for _, data in messages)
    # A control: the scorer sees spam when there is some (GTUBE, SpamAssassin's test string).
    gtube = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    control = (
        b"From: appeals@amnesty.test\r\nTo: ana@example.org\r\nSubject: control\r\n"
        b"Date: Tue, 01 Sep 2026 10:00:00 +0000\r\nMessage-ID: <control@amnesty.test>\r\n"
        b"\r\n" + gtube + b"\r\n"
    )
    *scores, control_score = _scores([*messages, ("control", control)], tmp_path)
    assert control_score > LIMIT
    worst = sorted(zip(scores, (n for n, _ in messages), strict=True), reverse=True)
    print(f"\n{len(messages)} messages; highest scores: {worst[:5]}")
    over = [(name, score) for score, name in worst if score > LIMIT]
    assert not over, over
