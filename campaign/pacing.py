"""Polite pacing: a Redis token bucket per receiving domain and per target address.

Everyone at one ministry shares one mail server, and a flood from one sender gets
that sender blacklisted. A message may go only when every bucket it touches (the
domain and the address of each recipient) has a token; otherwise it waits. The
buckets live in Redis so that every worker, on every machine, shares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from redis import Redis

# KEYS: bucket keys. ARGV: rate (tokens/s) and capacity for each key, in order.
# Takes one token from every bucket, or from none; returns the seconds to wait.
# The server's clock is used so that workers on several machines agree.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  local saved = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(saved[1]) or capacity
  local ts = tonumber(saved[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  state[i] = tokens
  if tokens < 1 then
    wait = math.max(wait, (1 - tokens) / rate)
  end
end
if wait > 0 then
  return tostring(wait)
end
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  redis.call('HSET', key, 'tokens', state[i] - 1, 'ts', now)
  redis.call('EXPIRE', key, math.ceil(capacity / rate) + 60)
end
return '0'
"""


@dataclass(frozen=True)
class PacingRules:
    """Limits for deliveries to targets; settings an admin can change at run time."""

    enabled: bool = True
    per_domain_per_hour: float = 120.0
    per_address_per_hour: float = 60.0
    # Seconds of traffic a bucket may save up: absorbs the sweeper's tick.
    burst_seconds: float = 2.0
    business_hours_only: bool = False
    opens_at: int = 9  # local hour in the target's time zone, Monday to Friday
    closes_at: int = 17

    def buckets(self, recipients: list[str]) -> list[tuple[str, float, float]]:
        """(key, tokens per second, capacity) for every bucket a message touches."""
        out: dict[str, tuple[float, float]] = {}
        for address in recipients:
            domain = address.rpartition("@")[2].lower()
            for key, per_hour in (
                (f"pace:domain:{domain}", self.per_domain_per_hour),
                (f"pace:address:{address.lower()}", self.per_address_per_hour),
            ):
                rate = per_hour / 3600.0
                # One token plus a little slack, so that the sweeper's tick does not
                # cost slow buckets any of their rate.
                out[key] = (rate, 1.0 + rate * self.burst_seconds)
        return [(key, rate, capacity) for key, (rate, capacity) in out.items()]


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
    """Asks the shared buckets whether a message may go now."""

    def __init__(self, redis: Redis, rules: PacingRules) -> None:
        self.rules = rules
        self._take = redis.register_script(_TAKE)

    def tightest(self, recipients: list[str]) -> tuple[str, float]:
        """The slowest bucket a message touches: (key, tokens per second)."""
        key, rate, _ = min(self.rules.buckets(recipients), key=lambda b: b[1])
        return key, rate

    def wait_for(self, recipients: list[str], timezone: str, now: datetime) -> float:
        """0 and a token taken from every bucket, or the seconds to wait (nothing taken)."""
        if not self.rules.enabled:
            return 0.0
        if self.rules.business_hours_only:
            closed = seconds_until_open(self.rules, timezone, now)
            if closed:
                return closed
        buckets = self.rules.buckets(recipients)
        args: list[float] = []
        for _, rate, capacity in buckets:
            args += [rate, capacity]
        return float(self._take(keys=[k for k, _, _ in buckets], args=args))
