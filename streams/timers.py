"""The timer index: which leads have a journey wait or a deferred command due, and when.

Faust's timers run per process and keep nothing across restarts, so due times
live in a table of their own. Its key is the due time (8 bytes, big-endian) and
then the lead id, so RocksDB keeps each partition's keys in due order. Finding
what is due is a seek to the start and a walk that stops at the first key in
the future: the cost grows with the number of due items, not with the number
of leads. The table has a changelog like the lead table, so a worker that takes
over a partition, after a crash or a rebalance, recovers its timers with it.

A fired entry is deleted, and RocksDB keeps a deletion as a tombstone until
compaction, so a walk from the first key would step over every entry fired
since. The walk therefore starts at a floor per partition: the first entry the
last walk found, lowered by every entry this process writes below it. A
partition newly assigned to the worker has no floor until its first walk.

Tables take writes only inside stream iteration, so the check does not change
any state. It sends a notice, keyed by lead id, to the timers topic on the
lead's own partition. The ingest agent reads it like an event and fires what is
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


class Floors:
    """The key each partition's walk starts at; no live index key lies below it."""

    def __init__(self) -> None:
        self._floors: dict[int, bytes] = {}
        self._partitions: set[int] = set()

    def get(self, partition: int) -> bytes | None:
        return self._floors.get(partition)

    def set(self, partition: int, key: bytes) -> None:
        self._floors[partition] = key

    def lower(self, partition: int, key: bytes) -> None:
        """Note an entry written to ``partition``; the floor moves down to it if needed."""
        floor = self._floors.get(partition)
        if floor is not None and key < floor:
            self._floors[partition] = key

    def assign(self, partitions: set[int]) -> None:
        """Forget the floors of partitions that were not active at the last check."""
        for partition in partitions - self._partitions:
            self._floors.pop(partition, None)
        self._partitions = set(partitions)


def due_keys(db: Any, now_ms: int, start: bytes | None = None, stops: list[bytes] | None = None) -> Iterator[bytes]:
    """Yield the index keys of ``db`` (a rocksdict Rdict) due at ``now_ms``, earliest first.

    The walk begins at ``start`` (the first key without one). The key it stops
    at, or the end marker when no key follows, is appended to ``stops``.
    """
    iterator = db.iter()
    if start is None:
        iterator.seek_to_first()
    else:
        iterator.seek(start)
    while iterator.valid():
        key = iterator.key()
        # Faust keeps its offset key in the same database. That key starts with "_",
        # which read as a due time lies thousands of years ahead, so the walk stops first.
        if len(key) < _DUE.size or _DUE.unpack_from(key)[0] > now_ms:
            break
        yield key
        iterator.next()
    if stops is not None:
        stops.append(iterator.key() if iterator.valid() else index_key(now_ms + 1, b""))


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


@dataclass
class DueCount:
    """Counts of the last check: entries due, and those due more than ``OVERDUE_MS`` earlier."""

    due: int = 0
    overdue: int = 0


OVERDUE_MS = 2_000  # a wait should fire within two seconds of its due time


def find_due(dbs: dict[int, Any], partitions: set[int], now_ms: int, notices: NoticeLog,
             floors: Floors | None = None, limit: int = 10_000, count: DueCount | None = None) -> list[Notice]:
    """Return the notices to send for the given partitions' index databases.

    ``count``, when given, is filled with the number of due and overdue entries seen.
    """
    found: list[Notice] = []
    notices.forget_older_than(now_ms)
    for partition in sorted(partitions):
        db = dbs.get(partition)
        if db is None:
            continue
        start = floors.get(partition) if floors is not None else None
        stops: list[bytes] = []
        first = None
        for key in due_keys(db, now_ms, start, stops):
            first = first or key
            if count is not None:
                count.due += 1
                count.overdue += parse_index_key(key)[0] < now_ms - OVERDUE_MS
            if notices.should_send(key, now_ms):
                due_ms, lead_id = parse_index_key(key)
                found.append(Notice(lead_id, due_ms, partition))
            if len(found) >= limit:
                break
        if floors is not None:
            floors.set(partition, first or (stops[0] if stops else start or b""))
        if len(found) >= limit:
            return found
    return found
