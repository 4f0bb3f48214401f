"""The acceptance journal: a note in Redis, written the moment the relay accepts
an appeal, before the database records it.

Statuses are written to the database in bulk, every few dozen messages. If a
worker dies in between, the sweeper reads this journal to tell the appeals the
relay already took (marked sent) from the ones it never saw (sent again). That
leaves one window for a duplicate: between the relay's ``250`` and this write.
"""

from __future__ import annotations

from redis import Redis

KEY = "appeals:accepted:{}"
TTL = 7 * 24 * 3600
"""Seconds a note is kept if the worker died before clearing it."""


def note(redis: Redis, appeal_id: int, message_id: str) -> None:
    redis.set(KEY.format(appeal_id), message_id, ex=TTL)


def clear(redis: Redis, appeal_ids: list[int]) -> None:
    if appeal_ids:
        redis.delete(*(KEY.format(i) for i in appeal_ids))


def accepted(redis: Redis, appeal_ids: list[int]) -> dict[int, str]:
    """appeal id → Message-ID, for the appeals the relay accepted."""
    if not appeal_ids:
        return {}
    values = redis.mget([KEY.format(i) for i in appeal_ids])
    return {i: v.decode() for i, v in zip(appeal_ids, values, strict=True) if v is not None}
