"""Appending consent ledger entries to the ledger table, one chain per partition."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import orjson

from nurture.agents.privacy.ledger import ENTRY_PREFIX, HEAD_KEY, entry_key, make_entry, seq_of

LAST_POSSIBLE_KEY = ENTRY_PREFIX + b"\xff" * 8


class LedgerStore:
    """Writes entries to ``table``, a Faust table whose writes go to the current event's partition.

    ``dbs()`` returns the table's RocksDB databases by partition, where the
    partition's last entry is found with one seek. Without it, ``table`` is a
    plain mapping holding one partition (unit tests).
    """

    def __init__(self, table: Any, dbs: Callable[[], Mapping[int, Any]] | None = None) -> None:
        self.table = table
        self.dbs = dbs

    def append(self, partition: int, content: Mapping[str, Any]) -> dict[str, Any]:
        entry = make_entry(self._last(partition), partition, content)
        self.table[entry_key(entry["seq"])] = orjson.dumps(entry)
        self.table[HEAD_KEY] = orjson.dumps({"seq": entry["seq"], "hash": entry["hash"]})
        return entry

    def _last(self, partition: int) -> dict[str, Any] | None:
        if self.dbs is None:
            head = self.table.get(HEAD_KEY)
            return orjson.loads(self.table[entry_key(orjson.loads(head)["seq"])]) if head is not None else None
        db = self.dbs().get(partition)
        if db is None:
            return None
        cursor = db.iter()
        cursor.seek_for_prev(LAST_POSSIBLE_KEY)
        if cursor.valid() and seq_of(bytes(cursor.key())) is not None:
            return orjson.loads(cursor.value())
        return None
