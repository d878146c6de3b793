"""Decoded lead rows kept between batches, so that a busy lead's row is not parsed again.

Parsing a stored row (several kilobytes of JSON) and opening its sealed
personal fields cost more than any other step of the handler. The cache keeps
the decoded row of recently written leads together with the exact bytes
written. A read uses the cached row only when the table still contains those
bytes, so a row changed by anything else (a table recovery after a takeover,
an erasure, another worker) is decoded again.

A cached row is handed out once: ``take`` removes it, and the handler puts it
back with the bytes it writes. A batch that fails halfway therefore leaves no
row in the cache that differs from its stored bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class RowCache:
    """Up to ``capacity`` decoded lead rows by table key, the least recently written dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[bytes, tuple[bytes, dict[str, Any]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def take(self, key: bytes, stored: bytes | None) -> dict[str, Any] | None:
        """Return and remove the cached row of ``key`` if it was written as ``stored``; else None."""
        entry = self._rows.pop(key, None)
        if entry is not None and stored is not None and (entry[0] is stored or entry[0] == stored):
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def put(self, key: bytes, stored: bytes, lead: dict[str, Any]) -> None:
        """Keep ``lead``, just written to the table as ``stored``."""
        if self.capacity <= 0:
            return
        self._rows[key] = (stored, lead)
        self._rows.move_to_end(key)
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)

    def forget(self, key: bytes) -> None:
        """Drop the row of ``key``, as before its lead is erased or exported."""
        self._rows.pop(key, None)
