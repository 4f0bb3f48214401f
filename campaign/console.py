"""The campaign office's console: what ``/manage`` reads.

Per campaign: appeals per status, deliveries per hour, the letters' languages and the
supporters' countries, and when everything queued will have gone at the pacing in
force, against the campaign's deadline. For the engine: RQ's queues, its live
workers and each receiving domain's pacing bucket. (Finding appeals is
:mod:`campaign.search`.)

The overview costs the same number of queries whatever the number of appeals: one
GROUP BY gives every count and breakdown, read from one index
(``ix_appeals_breakdown``); one statement counts the hourly deliveries, ranges of the
partial index of sent appeals; the lists are the latest few, their copies read in one
further query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import pycountry
from babel import Locale
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import StartedJobRegistry
from sqlalchemy import func, literal, select, text, union_all

from . import digests, selfsend, sending, standing
from .campaigns import Campaign, all_campaigns
from .db import db, utcnow
from .delivery.pacing import PacingRules, pacing_rules, peek
from .delivery.queue import APPEALS, RECEIPTS, SUPPORTERS, rq
from .letters import diplomats_of
from .models import SENT, Appeal, CampaignOption, Status
from .progress import _within_hours

WINDOW_HOURS = 24
"""Hours of deliveries the chart shows, the current one included."""

TOP_COUNTRIES = 8
"""Countries named in a campaign's breakdown; the rest are counted together."""

DUE = (Status.QUEUED, Status.RETRYING)
"""States of appeals that wait only for their turn (pacing, a retry's time, a worker)."""


# --- Readable times ----------------------------------------------------------------------


def relative(moment: datetime, now: datetime) -> str:
    """How far ``moment`` is from ``now``: "in 3 h 20 min", "5 min ago", "now"."""
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    if span < 5:
        return "now"
    if span < 60:
        return f"in {int(span)} s" if seconds > 0 else f"{int(span)} s ago"
    minutes = int(span // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        text = f"{days} d {hours} h" if hours and days < 10 else f"{days} d"
    elif hours:
        text = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    else:
        text = f"{minutes} min"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def readable(moment: datetime, now: datetime) -> str:
    """``2026-11-30 21:34 UTC (in 5 min)``: the time, and how far it is."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC ({relative(moment, now)})"


# --- Names -------------------------------------------------------------------------------


@cache
def country_name(code: str) -> str:
    country = pycountry.countries.get(alpha_2=code) if code else None
    return (getattr(country, "common_name", None) or country.name) if country else code or "?"


@cache
def language_name(code: str) -> str:
    return str(Locale("en").languages.get(code, code or "?"))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


# --- Why an appeal waits -----------------------------------------------------------------


def waiting_reason(
    appeal: Any, now: datetime, gate: sending.Gate | None = None
) -> tuple[str, datetime | None] | None:
    """Why an appeal that has not gone yet waits, and until when; None if it does not
    wait (it went, failed or was cancelled). ``gate``: the pauses in force."""
    status, until = appeal.status, appeal.next_attempt_at
    if until is not None and until <= now:
        until = None
    if status in DUE and gate is not None and gate.holds(appeal.campaign):
        where = "every campaign" if gate.everything_paused else "this campaign"
        return f"sending is paused for {where}: it goes when sending resumes", None
    if status == Status.QUEUED:
        if until is not None:
            return "paced: its turn comes", until
        return "due now: waiting for a worker", None
    if status == Status.RETRYING:
        reply = appeal.status_reason or "a temporary refusal"
        return f"refused for now ({reply}); next try", until
    if status == Status.HELD:
        return appeal.status_reason or "held by a manager", None
    if status == Status.SENDING:
        return "being sent right now", None
    if status == Status.AWAITING_CONFIRMATION:
        return "waiting for the supporter to confirm", None
    return None


# --- The overview ------------------------------------------------------------------------


@dataclass
class Eta:
    """When everything queued for a campaign will have gone, at the pacing in force."""

    now: datetime
    waiting: int
    """Appeals queued or retrying."""
    held: int
    finishes_at: datetime | None
    """None: nothing waits, or pacing is off (then the workers and the relay decide)."""
    deadline_at: datetime | None
    """The end of the deadline's day in the main addressee's time zone."""
    bottleneck: str = ""
    pacing_on: bool = True

    @property
    def late(self) -> bool:
        """Appeals wait, and will not all have gone by the deadline."""
        if not self.waiting or self.deadline_at is None:
            return False
        return (self.finishes_at or self.now) > self.deadline_at


@dataclass
class CampaignOverview:
    campaign: Campaign
    state: str
    counts: dict[str, int]
    languages: list[tuple[str, str, int]]
    """(code, name, appeals), most first; cancelled appeals are not counted."""
    countries: list[tuple[str, str, int]]
    hours: list[tuple[datetime, int]]
    """Appeals sent in each of the last :data:`WINDOW_HOURS` hours, oldest first."""
    eta: Eta
    sending_paused: bool = False
    """Its appeals wait: sending is paused for it, or for every campaign."""
    paused_here: bool = False
    """Sending is paused for this campaign itself."""
    test_address: str | None = None
    """In test mode: every appeal goes to this staff address instead."""
    self_sent: int = 0
    """Supporters who said they sent the letter from their own mailbox ("self-sent
    (reported)", :mod:`campaign.selfsend`): never counted as sent by us."""
    self_sent_also_ours: int = 0
    """Of those, reports from an appeal that was also confirmed to go through us."""

    @property
    def slug(self) -> str:
        return self.campaign.slug

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def sent_in_window(self) -> int:
        return sum(n for _, n in self.hours)

    @property
    def busiest(self) -> int:
        """The most appeals sent in one hour of the window."""
        return max((n for _, n in self.hours), default=0)


@dataclass
class DomainPacing:
    """One receiving domain's bucket: every copy to that mail server draws on it."""

    domain: str
    per_hour: float
    tokens: float
    next_send_at: datetime | None
    """None: a copy may go now."""
    waiting: int
    """Appeals queued or retrying whose letter goes (also) to this domain."""


@dataclass
class Engine:
    queues: list[tuple[str, int, int]] = field(default_factory=list)
    """(queue, jobs waiting, jobs running)."""
    workers: list[tuple[str, str]] = field(default_factory=list)
    """(worker, state) of each live worker."""
    pacing: list[DomainPacing] = field(default_factory=list)
    pacing_on: bool = True
    broker_error: str | None = None


@dataclass
class Overview:
    now: datetime
    counts: dict[str, int]
    campaigns: list[CampaignOverview]
    engine: Engine
    gate: sending.Gate


def _grouped() -> list[Any]:
    """(campaign, status, language, country, appeals): every count on the page."""
    return list(
        db.session.execute(
            select(
                Appeal.campaign, Appeal.status, Appeal.language, Appeal.country, func.count()
            ).group_by(Appeal.campaign, Appeal.status, Appeal.language, Appeal.country)
        )
    )


def _hourly(now: datetime) -> dict[str, dict[datetime, int]]:
    """campaign → hour → appeals sent in that hour, for each hour of the window: one
    statement of a range count per hour, each read from the partial index of sent
    appeals (its condition written as the index has it). Counting index ranges costs a
    third of grouping every row of a busy day by its hour."""
    hours = _window(now)
    ranges = [
        select(literal(i), Appeal.campaign, func.count())
        .where(text(SENT), Appeal.sent_at >= hour, Appeal.sent_at < hour + timedelta(hours=1))
        .group_by(Appeal.campaign)
        for i, hour in enumerate(hours)
    ]
    hourly: dict[str, dict[datetime, int]] = {}
    for i, slug, n in db.session.execute(union_all(*ranges)):
        hourly.setdefault(slug, {})[hours[i]] = n
    return hourly


def _window(now: datetime) -> list[datetime]:
    """The start of each hour the chart shows, oldest first; the last is the current one."""
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [last - timedelta(hours=h) for h in range(WINDOW_HOURS - 1, -1, -1)]


def _hours(now: datetime, counts: dict[datetime, int]) -> list[tuple[datetime, int]]:
    return [(h, counts.get(h, 0)) for h in _window(now)]


def _ranked(counter: Counter[str], name: Any, top: int | None = None) -> list[tuple[str, str, int]]:
    ranked = sorted(
        ((code, name(code), n) for code, n in counter.items() if n),
        key=lambda row: (-row[2], row[1]),
    )
    if top is not None and len(ranked) > top + 1:
        rest = sum(n for _, _, n in ranked[top:])
        ranked = ranked[:top] + [("", f"{len(ranked) - top} others", rest)]
    return ranked


def deadline_at(campaign: Campaign) -> datetime | None:
    """The moment the deadline's day ends where the main addressee is."""
    if campaign.deadline is None:
        return None
    zone = ZoneInfo(campaign.to.timezone)
    return datetime.combine(campaign.deadline + timedelta(days=1), time(0), tzinfo=zone)


@dataclass
class _Backlog:
    """Appeals waiting per target address, and which addresses each campaign writes to."""

    per_address: Counter[str] = field(default_factory=Counter)
    addresses: dict[str, set[str]] = field(default_factory=dict)

    def per_domain(self) -> Counter[str]:
        domains: Counter[str] = Counter()
        for address, n in self.per_address.items():
            domains[domain_of(address)] += n
        return domains


def _backlog(
    campaigns: Mapping[str, Campaign],
    due: Mapping[str, Counter[str]],
    diplomats: Mapping[str, Mapping[str, Sequence[Any]]],
) -> _Backlog:
    """Who the waiting appeals go to: every one to the campaign's addressees with an
    address, and each to the diplomats of its supporter's country. An appeal whose
    copy to one of them went already (it waits for another) is counted too: the
    figure is an upper bound, and rarely off by more than a few."""
    backlog = _Backlog()
    for slug, campaign in campaigns.items():
        by_country = due.get(slug, Counter())
        total = sum(by_country.values())
        addresses = backlog.addresses.setdefault(slug, set())
        for addressee in campaign.addressees:
            if addressee.email:
                address = addressee.email.lower()
                addresses.add(address)
                backlog.per_address[address] += total
        for country, n in by_country.items():
            for diplomat in diplomats.get(slug, {}).get(country, []):
                if diplomat.email and n:
                    address = diplomat.email.lower()
                    addresses.add(address)
                    backlog.per_address[address] += n
    return backlog


def _buckets(
    rules: PacingRules, backlog: _Backlog
) -> tuple[dict[str, tuple[str, float, float]], dict[str, tuple[str, float, float]]]:
    domains = {d: rules.domain_bucket(d) for d in backlog.per_domain()}
    addresses = {a: rules.address_bucket(a) for a in backlog.per_address}
    return domains, addresses


def _eta(
    campaign: Campaign,
    now: datetime,
    waiting: int,
    held: int,
    rules: PacingRules,
    backlog: _Backlog,
    levels: Mapping[str, tuple[float, float, float]],
) -> Eta:
    """The slowest bucket a campaign's waiting appeals draw on decides when the last
    one goes: its backlog (every campaign's, as buckets are shared) over its rate,
    less the tokens it holds now. ``levels``: bucket key → (tokens, per hour, seconds
    to the next send), empty when the broker did not answer (full buckets assumed)."""
    eta = Eta(now, waiting, held, None, deadline_at(campaign), pacing_on=rules.enabled)
    if not waiting or not rules.enabled:
        return eta
    domains = backlog.per_domain()
    longest, slowest = 0.0, ""
    for address in sorted(backlog.addresses.get(campaign.slug, ())):
        domain = domain_of(address)
        for (key, rate, capacity), queued, label in (
            (rules.address_bucket(address), backlog.per_address[address], address),
            (rules.domain_bucket(domain), domains[domain], f"everyone at {domain}"),
        ):
            if rate <= 0:
                continue
            tokens = levels[key][0] if key in levels else capacity
            seconds = max(0.0, queued - tokens) / rate
            if seconds > longest or not slowest:
                longest, slowest = seconds, f"{label}: {queued} waiting at {rate * 3600:g} an hour"
    eta.bottleneck = slowest
    if rules.business_hours_only:
        eta.finishes_at = _within_hours(rules, campaign.to.timezone, now, longest)
    else:
        eta.finishes_at = now + timedelta(seconds=longest)
    return eta


def _engine(
    now: datetime, rules: PacingRules, backlog: _Backlog
) -> tuple[Engine, dict[str, tuple[float, float, float]]]:
    """RQ's queues and workers, and the pacing buckets, from Redis; nothing from the
    database. A broker that does not answer is said, not raised."""
    engine = Engine(pacing_on=rules.enabled)
    levels: dict[str, tuple[float, float, float]] = {}
    try:
        connection = rq.connection()
        for name in (APPEALS, SUPPORTERS, RECEIPTS):
            queue = Queue(name, connection=connection)
            running = StartedJobRegistry(queue=queue).count
            engine.queues.append((name, queue.count, running))
        engine.workers = sorted(
            (w.name, str(w.get_state())) for w in Worker.all(connection=connection)
        )
        domains, addresses = _buckets(rules, backlog)
        keyed = list(domains.items()) + list(addresses.items())
        if rules.enabled and keyed:
            found = peek(connection, [bucket for _, bucket in keyed])
            levels = {s.key: (s.tokens, s.per_hour, s.next_send_in) for s in found}
    except (RedisError, OSError) as e:
        engine.broker_error = f"the broker (Redis) does not answer: {type(e).__name__}"
        domains, _ = _buckets(rules, backlog)
    per_domain = backlog.per_domain()
    for domain, (key, rate, capacity) in domains.items():
        tokens, _, wait = levels.get(key, (capacity, rate * 3600, 0.0))
        engine.pacing.append(
            DomainPacing(
                domain=domain,
                per_hour=rate * 3600,
                tokens=tokens,
                next_send_at=now + timedelta(seconds=wait) if wait else None,
                waiting=per_domain[domain],
            )
        )
    engine.pacing.sort(key=lambda d: (-d.waiting, d.domain))
    return engine, levels


def overview(now: datetime | None = None) -> Overview:
    """Everything the overview shows, in a fixed number of queries."""
    now = now or utcnow()
    campaigns = all_campaigns()
    counts = dict.fromkeys(Status.ALL, 0)
    per_campaign: dict[str, dict[str, int]] = {}
    languages: dict[str, Counter[str]] = {}
    countries: dict[str, Counter[str]] = {}
    due: dict[str, Counter[str]] = {}
    for slug, status, language, country, n in _grouped():
        counts[status] = counts.get(status, 0) + n
        per_campaign.setdefault(slug, dict.fromkeys(Status.ALL, 0))[status] += n
        if status != Status.CANCELLED:
            languages.setdefault(slug, Counter())[language] += n
            countries.setdefault(slug, Counter())[country] += n
        if status in DUE:
            due.setdefault(slug, Counter())[country] += n
    hourly = _hourly(now)
    options = {o.slug: o for o in db.session.scalars(select(CampaignOption))}
    gate = sending.read()
    rules = pacing_rules()
    diplomats = {slug: diplomats_of(c) for slug, c in campaigns.items() if c.diplomats_of}
    backlog = _backlog(campaigns, due, diplomats)
    engine, levels = _engine(now, rules, backlog)
    self_sent = selfsend.counts()
    overviews = []
    for slug, campaign in campaigns.items():
        mine = per_campaign.get(slug, dict.fromkeys(Status.ALL, 0))
        option = options.get(slug) or CampaignOption(slug=slug, paused=False, closed=False)
        overviews.append(
            CampaignOverview(
                campaign=campaign,
                state=standing.state_of(campaign, option),
                counts=mine,
                languages=_ranked(languages.get(slug, Counter()), language_name),
                countries=_ranked(countries.get(slug, Counter()), country_name, TOP_COUNTRIES),
                hours=_hours(now, hourly.get(slug, {})),
                eta=digests.with_mode(  # a digest campaign's ETA is its next digest
                    _eta(
                        campaign,
                        now,
                        sum(mine[s] for s in DUE),
                        mine[Status.HELD],
                        rules,
                        backlog,
                        levels,
                    ),
                    slug,
                    now,
                ),
                sending_paused=gate.holds(slug),
                paused_here=slug in gate.paused,
                test_address=gate.test_address(slug),
                self_sent=self_sent.get(slug, (0, 0))[0],
                self_sent_also_ours=self_sent.get(slug, (0, 0))[1],
            )
        )
    return Overview(now=now, counts=counts, campaigns=overviews, engine=engine, gate=gate)
