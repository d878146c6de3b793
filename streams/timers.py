"""The timer index: which leads have a journey wait or a deferred command due, and when.

Faust's timers run per process and keep nothing across restarts, so due times
live in a table of their own. Its key is the due time (8 bytes, big-endian) and
then the lead id, so RocksDB keeps each partition's keys in due order. Finding
what is due is a seek to the start and a walk that stops at the first key in
the future: the cost grows with the number of due items, not with the number
of leads. The table has a changelog like the lead table, so a worker that takes
over a partition, after a crash or a rebalance, recovers its timers with it.

Tables take writes only inside stream iteration, so the check does not change
any state. It sends a notice, keyed by lead id, to the timers topic on the
lead's own partition; the ingest agent reads it like an event and fires what is
due for that lead. A notice that arrives twice, or late, finds nothing due and
changes nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterator

_DUE = struct.Struct(">Q")


def index_key(due_ms: int, lead_id: bytes) -> bytes:
    return _DUE.pack(due_ms) + lead_id


def parse_index_key(key: bytes) -> tuple[int, bytes]:
    return _DUE.unpack_from(key)[0], key[_DUE.size:]


def due_keys(db: Any, now_ms: int) -> Iterator[bytes]:
    """Yield the index keys of ``db`` (a rocksdict Rdict) due at ``now_ms``, earliest first."""
    iterator = db.iter()
    iterator.seek_to_first()
    while iterator.valid():
        key = iterator.key()
        # Faust keeps its offset key in the same database; it starts with "_",
        # which as a due time lies thousands of years ahead, so the walk stops first.
        if len(key) < _DUE.size or _DUE.unpack_from(key)[0] > now_ms:
            return
        yield key
        iterator.next()


@dataclass(frozen=True)
class Notice:
    """A lead with something due, sent to its own partition of the timers topic."""

    lead_id: bytes
    due_ms: int
    partition: int


class NoticeLog:
    """Remembers recent notices so that one due item is not announced on every check.

    A notice not acted on within ``repeat_ms`` (lost in a rebalance, say) is sent again.
    """

    def __init__(self, repeat_ms: int = 10_000) -> None:
        self.repeat_ms = repeat_ms
        self._sent: dict[bytes, int] = {}

    def should_send(self, key: bytes, now_ms: int) -> bool:
        sent = self._sent.get(key)
        if sent is not None and now_ms - sent < self.repeat_ms:
            return False
        self._sent[key] = now_ms
        return True

    def forget_older_than(self, now_ms: int) -> None:
        self._sent = {key: at for key, at in self._sent.items() if now_ms - at < self.repeat_ms}


def find_due(dbs: dict[int, Any], partitions: set[int], now_ms: int, notices: NoticeLog,
             limit: int = 10_000) -> list[Notice]:
    """Return the notices to send for the given partitions' index databases."""
    found: list[Notice] = []
    notices.forget_older_than(now_ms)
    for partition in sorted(partitions):
        db = dbs.get(partition)
        if db is None:
            continue
        for key in due_keys(db, now_ms):
            if notices.should_send(key, now_ms):
                due_ms, lead_id = parse_index_key(key)
                found.append(Notice(lead_id, due_ms, partition))
            if len(found) >= limit:
                return found
    return found
