"""The delivery worker's record of handled commands, in SQLite, for de-duplication across restarts.

For each command whose outcome is decided, the store keeps the encoded feedback
record and whether the broker acknowledged it. A redelivered command that is
published is dropped; one whose feedback is not yet published gets the stored
feedback again, without a second mail.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from nurture.config.errors import NurtureError

STORE_FILE_NAME = "delivered.sqlite3"
RETENTION_MS = 7 * 24 * 3600 * 1000  # commands expire after 48 hours by default, well within this

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    command_id TEXT PRIMARY KEY,
    lead_id    TEXT NOT NULL,
    handled_at INTEGER NOT NULL,  -- epoch milliseconds UTC
    feedback   BLOB NOT NULL,     -- the encoded feedback record, published as it is
    published  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS handled_by_time ON handled (handled_at);
"""


class StoreError(NurtureError):
    """The de-duplication store cannot be opened."""


@dataclass(frozen=True)
class HandledCommand:
    command_id: str
    lead_id: str
    handled_at: int
    feedback: bytes
    published: bool


class DeliveryStore:
    """Handled command ids with their feedback, kept for at least ``RETENTION_MS``."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str]) -> DeliveryStore:
        """Open or create ``delivered.sqlite3`` in ``state_dir``, creating the directory too."""
        path = Path(state_dir) / STORE_FILE_NAME
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: every statement is its own transaction, written through before it returns.
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"cannot open the de-duplication store {path}: {exc}; "
                "check NURTURE_DELIVER_STATE_DIR and its permissions") from exc

        return cls(connection, path)

    def lookup(self, command_id: str) -> HandledCommand | None:
        row = self._db.execute(
            "SELECT command_id, lead_id, handled_at, feedback, published FROM handled WHERE command_id = ?",
            (command_id,),
        ).fetchone()
        if row is None:
            return None
        return HandledCommand(row[0], row[1], row[2], bytes(row[3]), bool(row[4]))

    def record(self, command_id: str, lead_id: str, feedback: bytes, now_ms: int) -> None:
        """Store a decided outcome as not yet published. An earlier entry of the same id is kept."""
        self._db.execute(
            "INSERT OR IGNORE INTO handled (command_id, lead_id, handled_at, feedback) VALUES (?, ?, ?, ?)",
            (command_id, lead_id, now_ms, feedback),
        )

    def mark_published(self, command_id: str) -> None:
        self._db.execute("UPDATE handled SET published = 1 WHERE command_id = ?", (command_id,))

    def purge(self, now_ms: int) -> int:
        """Delete published entries older than the retention and return their count."""
        cursor = self._db.execute(
            "DELETE FROM handled WHERE published = 1 AND handled_at < ?", (now_ms - RETENTION_MS,)
        )
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()
