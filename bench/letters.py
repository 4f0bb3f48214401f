"""python bench/letters.py: how alike supporters' letters are, and what one costs to render.

1. Renders N synthetic appeals (2,000 by default) as ``campaign/synthetic.py`` makes
   them: a name and an address of their own, the campaign's languages and ten
   countries in turn, no sentence of their own. Takes each supporter's name out of
   the text (``letters.fingerprint``, as the preview's count does) and prints, per
   language and overall, how many distinct bodies there are and how many of every
   1,000 pairs of appeals are identical. ``--country GB`` gives everyone one country,
   the harder case: then only the wording tells letters apart.
2. Times ``letters.render_letter`` for an English appeal (which carries its Spanish
   version) and a Spanish one: the best of seven rounds of 2,000 calls, in CPU time
   (the machine is shared, and wall-clock time here is mostly other people's work).

All of it in an app context on a throwaway SQLite database: nothing is sent, and no
broker is needed.

Figures on the 2-core machine of DESIGN.md, 2,000 appeals, name removed:

* before (HEAD 3f31d2f: en and es, one variant number picking one of three openings):
  30 distinct bodies, 33 identical pairs per 1,000 (66 within a language); with one
  country, 3 bodies a language and 333 per 1,000. render_letter: en 105-125 µs,
  es 100-110 µs.
* now (8 languages, 6 paragraphs of 5 phrasings, 5 subjects, each from bits of its
  own): 1,999 or 2,000 distinct, 0.00 per 1,000 (at most 0.1 within a language); with
  one country, about 0.06 per 1,000 (1 in 15,625 is the exact figure). render_letter:
  en with its Spanish version 64-82 µs, es 42-49 µs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COUNTRIES = ("GB", "DE", "FR", "ES", "US", "MX", "AR", "IT", "NL", "SE")
"""The countries ``campaign/synthetic.py`` gives its supporters, in turn."""


def identical_per_thousand(bodies: Counter[str]) -> float:
    """Of every 1,000 pairs of appeals, how many are the same letter."""
    n = sum(bodies.values())
    pairs = n * (n - 1) // 2
    same = sum(k * (k - 1) // 2 for k in bodies.values())
    return 1000 * same / pairs if pairs else 0.0


def measure(slug: str, count: int, country: str | None) -> None:
    from campaign.campaigns import get_campaign
    from campaign.letters import fingerprint, letter_for

    campaign = get_campaign(slug)
    overall: Counter[str] = Counter()
    by_language: dict[str, Counter[str]] = {lang: Counter() for lang in campaign.languages}
    for i in range(count):
        writer = SimpleNamespace(
            name=f"Synthetic Supporter bench-{i}",
            email=f"supporter-bench-{i}@example.org",
            language=campaign.languages[i % len(campaign.languages)],
            country=country or COUNTRIES[i % len(COUNTRIES)],
            message=None,
        )
        body = fingerprint(letter_for(campaign, writer, "bench").text, writer.name)
        overall[body] += 1
        by_language[writer.language][body] += 1
    print(f"{count} synthetic appeals, {slug}, name removed")
    print(f"{'':8} {'appeals':>8} {'distinct':>9} {'identical pairs per 1,000':>26}")
    for language, bodies in by_language.items():
        print(
            f"{language:8} {sum(bodies.values()):>8} {len(bodies):>9} "
            f"{identical_per_thousand(bodies):>26.3f}"
        )
    print(f"{'overall':8} {count:>8} {len(overall):>9} {identical_per_thousand(overall):>26.3f}")


def time_renders(slug: str, calls: int) -> None:
    from campaign.campaigns import get_campaign
    from campaign.letters import render_letter

    campaign = get_campaign(slug)
    for language in ("en", "es"):
        seeds = iter(range(10**9))

        def render(language: str = language, seeds: Iterator[int] = seeds) -> None:
            seed = f"timing-{next(seeds)}@example.org"  # a new supporter every call
            render_letter(
                campaign,
                name="Ana García",
                email=seed,
                language=language,
                country="GB",
                message=None,
                seed=seed,
                diplomats=[],
                org_name="bench",
            )

        render()
        best = min(timeit.repeat(render, number=calls, repeat=7, timer=time.process_time))
        print(f"render_letter {language}: {best / calls * 1e6:.1f} µs (CPU, best of 7 x {calls})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--campaign", default="pavlov-extradition")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--country", help="one country for everyone (default: ten in turn)")
    parser.add_argument("--calls", type=int, default=2000, help="render_letter calls per round")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from app import create_app
    from campaign.db import db

    with tempfile.TemporaryDirectory(prefix="bench-letters-") as tmp:
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "bench",
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/letters.db",
                "REDIS_URL": "redis://127.0.0.1:1/0",  # never used: nothing is queued
                "MAIL_SERVER": "127.0.0.1",
                "MAIL_PORT": 1,
            }
        )
        with app.app_context():
            upgrade()  # the diplomats' table, which letter_for reads
            measure(args.campaign, args.count, args.country)
            if not args.no_timing:
                time_renders(args.campaign, args.calls)
            db.session.remove()
            db.engine.dispose()


if __name__ == "__main__":
    main()
