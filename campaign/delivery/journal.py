"""The acceptance journal: a note in Redis, written the moment the relay accepts an
appeal's message, before the database records it.

Outcomes are written to the database in bulk, every few hundred messages or two
seconds. If a worker dies in between, the dispatcher reads this journal to tell
the appeals the relay already took (recorded as the note says) from the ones it
never saw (sent again). That leaves one window for a duplicate: between the
relay's ``250`` and this write. A note holds the appeal's copies as they should
be stored (see :func:`~.recipients.to_note`), so recovering from it takes the
same path as the batch's own write.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

KEY = "appeals:accepted:{}"
TTL = 7 * 24 * 3600
"""Seconds a note is kept if the worker died before clearing it."""
_TTL = str(TTL).encode()


class Journal:
    """A worker's writer. ``note`` sends the command at once but reads Redis's
    reply later (``settle``): the note is on its way to Redis when ``note``
    returns, at a twentieth of the cost of a round trip (measured: 0.017 ms
    against 0.17 ms), and it is settled before the database write it covers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._connection: Any = None
        self._pending = 0

    def note(self, appeal_id: int, note: str) -> None:
        if self._connection is None:
            self._connection = self.redis.connection_pool.get_connection()
        key = KEY.format(appeal_id).encode()
        value = note.encode()
        # SET key value EX ttl, in RESP: a third of redis-py's packing cost on this path.
        self._connection.send_packed_command(
            [
                b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$%d\r\n%s\r\n"
                % (len(key), key, len(value), value, len(_TTL), _TTL)
            ],
            check_health=False,
        )
        self._pending += 1

    def settle(self) -> None:
        """Read every outstanding reply; raises if Redis refused a note."""
        while self._pending:
            self._pending -= 1
            self._connection.read_response()

    def clear(self, appeal_ids: list[int]) -> None:
        self.settle()
        clear(self.redis, appeal_ids)

    def close(self) -> None:
        if self._connection is not None:
            try:
                self.settle()
            finally:
                self.redis.connection_pool.release(self._connection)
                self._connection = None


def clear(redis: Redis, appeal_ids: list[int]) -> None:
    for start in range(0, len(appeal_ids), 1000):
        redis.delete(*(KEY.format(i) for i in appeal_ids[start : start + 1000]))


def accepted(redis: Redis, appeal_ids: list[int]) -> dict[int, bytes]:
    """appeal id → note, for the appeals the relay accepted and no batch recorded."""
    found: dict[int, bytes] = {}
    for start in range(0, len(appeal_ids), 1000):
        chunk = appeal_ids[start : start + 1000]
        values = redis.mget([KEY.format(i) for i in chunk])
        found.update({i: v for i, v in zip(chunk, values, strict=True) if v is not None})
    return found
