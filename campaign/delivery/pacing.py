"""Polite pacing: a Redis token bucket per receiving domain and per target address.

Everyone at one ministry shares one mail server, and a flood from one sender gets
that sender blacklisted. Each recipient's copy may go only when both of its
buckets (its domain's and its address's) have a token; otherwise that copy waits
and the others go. The buckets live in Redis so that every worker, on every
machine, shares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from redis import Redis

from ..settings import PACING_KEYS, stored

# KEYS: two bucket keys per recipient, its domain's and its address's.
# ARGV: rate (tokens/s) and capacity for each key, in order.
# For each recipient in turn, takes one token from both of its buckets, or from
# neither; returns, per recipient, the seconds to wait (0: a token was taken).
# The server's clock is used so that workers on several machines agree.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local waits = {}
for r = 1, #KEYS / 2 do
  local wait = 0
  local state = {}
  for j = 1, 2 do
    local i = 2 * (r - 1) + j
    local rate = tonumber(ARGV[2 * i - 1])
    local capacity = tonumber(ARGV[2 * i])
    local saved = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local tokens = tonumber(saved[1]) or capacity
    local ts = tonumber(saved[2]) or now
    tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
    state[j] = tokens
    if tokens < 1 then
      wait = math.max(wait, (1 - tokens) / rate)
    end
  end
  if wait == 0 then
    for j = 1, 2 do
      local i = 2 * (r - 1) + j
      local rate = tonumber(ARGV[2 * i - 1])
      local capacity = tonumber(ARGV[2 * i])
      redis.call('HSET', KEYS[i], 'tokens', state[j] - 1, 'ts', now)
      redis.call('EXPIRE', KEYS[i], math.ceil(capacity / rate) + 60)
    end
  end
  waits[r] = tostring(wait)
end
return waits
"""


@dataclass(frozen=True)
class PacingRules:
    """Limits for deliveries to targets; settings an admin can change at run time."""

    enabled: bool = True
    per_domain_per_hour: float = 120.0
    per_address_per_hour: float = 60.0
    # Seconds of traffic a bucket may save up: absorbs the dispatcher's tick.
    burst_seconds: float = 2.0
    business_hours_only: bool = False
    opens_at: int = 9  # local hour in the target's time zone, Monday to Friday
    closes_at: int = 17

    def buckets(self, address: str) -> tuple[tuple[str, float, float], tuple[str, float, float]]:
        """(key, tokens per second, capacity) of the two buckets a recipient draws on:
        its receiving domain's and its own."""
        return self.domain_bucket(address.rpartition("@")[2]), self.address_bucket(address)

    def domain_bucket(self, domain: str) -> tuple[str, float, float]:
        """The bucket every copy to ``domain`` shares (one ministry, one mail server)."""
        return self._bucket(f"pace:domain:{domain.lower()}", self.per_domain_per_hour)

    def address_bucket(self, address: str) -> tuple[str, float, float]:
        return self._bucket(f"pace:address:{address.lower()}", self.per_address_per_hour)

    def _bucket(self, key: str, per_hour: float) -> tuple[str, float, float]:
        rate = per_hour / 3600.0
        # One token plus a little slack, so that the dispatcher's tick does not cost
        # slow buckets any of their rate.
        return key, rate, 1.0 + rate * self.burst_seconds


def seconds_until_open(rules: PacingRules, timezone: str, now: datetime) -> float:
    """0 inside business hours in ``timezone``, else the seconds until they begin."""
    local = now.astimezone(ZoneInfo(timezone))
    if local.weekday() < 5 and rules.opens_at <= local.hour < rules.closes_at:
        return 0.0
    day = local.replace(hour=rules.opens_at, minute=0, second=0, microsecond=0)
    if local >= day:
        day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return (day - local).total_seconds()


class Pacer:
    """Asks the shared buckets whether each recipient's copy may go now."""

    def __init__(self, redis: Redis, rules: PacingRules) -> None:
        self.rules = rules
        self._take = redis.register_script(_TAKE)

    def tightest(self, address: str) -> tuple[str, float]:
        """The slower of a recipient's two buckets: (key, tokens per second)."""
        key, rate, _ = min(self.rules.buckets(address), key=lambda b: b[1])
        return key, rate

    def waits(self, recipients: list[str], timezone: str, now: datetime) -> dict[str, float]:
        """Per recipient: 0 and a token taken from both of its buckets, or the seconds
        to wait (nothing taken). Copies to a slow embassy wait without holding back
        the Minister's, and the other way round."""
        if not self.rules.enabled or not recipients:
            return dict.fromkeys(recipients, 0.0)
        if self.rules.business_hours_only:
            closed = seconds_until_open(self.rules, timezone, now)
            if closed:
                return dict.fromkeys(recipients, closed)
        keys: list[str] = []
        args: list[float] = []
        for address in recipients:
            for key, rate, capacity in self.rules.buckets(address):
                keys.append(key)
                args += [rate, capacity]
        waits = self._take(keys=keys, args=args)
        return {address: float(w) for address, w in zip(recipients, waits, strict=True)}


@dataclass(frozen=True)
class BucketState:
    """A bucket as the take script would find it now (for the managers' console)."""

    key: str
    per_hour: float
    tokens: float
    """Tokens in it now; a copy may go when there is a whole one."""

    @property
    def next_send_in(self) -> float:
        """Seconds until the bucket holds a whole token (0: a copy may go now)."""
        if self.tokens >= 1 or self.per_hour <= 0:
            return 0.0
        return (1 - self.tokens) * 3600.0 / self.per_hour


def peek(redis: Redis, buckets: list[tuple[str, float, float]]) -> list[BucketState]:
    """The state of each (key, tokens per second, capacity) bucket now, by Redis's
    clock, computed as :data:`_TAKE` does (a bucket never used is full), in one round
    trip. Takes nothing."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        for key, _, _ in buckets:
            pipe.hmget(key, "tokens", "ts")
        clock, *saved = pipe.execute()
    now = clock[0] + clock[1] / 1_000_000
    found = []
    for (key, rate, capacity), (tokens, ts) in zip(buckets, saved, strict=True):
        level = capacity if tokens is None else float(tokens)
        elapsed = 0.0 if ts is None else max(0.0, now - float(ts))
        found.append(BucketState(key, rate * 3600.0, min(capacity, level + elapsed * rate)))
    return found


def pacing_rules() -> PacingRules:
    """The pacing in force: admin-screen values over the configuration. Read per batch.

    ``PACING_ENABLED=false`` in the environment switches pacing off entirely (benchmarks).
    """
    config = current_app.config
    overrides = stored()
    values = {
        key: overrides.get(key, config[config_key]) for key, config_key in PACING_KEYS.items()
    }
    return PacingRules(
        enabled=bool(config["PACING_ENABLED"]),
        per_domain_per_hour=float(values["pacing_per_domain_per_hour"]),
        per_address_per_hour=float(values["pacing_per_address_per_hour"]),
        business_hours_only=bool(values["pacing_business_hours_only"]),
        burst_seconds=float(config["PACING_BURST_SECONDS"]),
    )
