"""The consent ledger: an append-only, hash-chained record of every consent change.

Each partition of the consent topic has its own chain, written only by the
worker that owns the partition. Entry ``n`` contains the SHA-256 hash of entry
``n - 1`` and its own hash over its content and that link, so changing,
removing or reordering a stored entry breaks the chain at that place. Entries
name the lead by a keyed hash (``subject``), never by its id or address, so
they can outlive an erasure and still prove what consent was given when.

What the chain does not prove by itself: someone able to rewrite a whole
partition's tail and its hashes could forge a consistent chain. ``nurture
consent verify`` prints each chain's head hash; keeping those heads elsewhere
(a daily log, a ticket) anchors everything before them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import orjson

GENESIS = "0" * 64
ENTRY_PREFIX = b"e"
HEAD_KEY = b"head"  # {"seq", "hash"} of the partition's last entry, written after it


def entry_key(seq: int) -> bytes:
    """Table key of entry ``seq``: big-endian, so that entries sort in chain order."""
    return ENTRY_PREFIX + seq.to_bytes(8, "big")


def seq_of(key: bytes) -> int | None:
    if len(key) != 9 or not key.startswith(ENTRY_PREFIX):
        return None
    return int.from_bytes(key[1:], "big")


def entry_hash(entry: Mapping[str, Any]) -> str:
    content = {name: value for name, value in entry.items() if name != "hash"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


def make_entry(previous: Mapping[str, Any] | None, partition: int, content: Mapping[str, Any]) -> dict[str, Any]:
    """Return the entry that follows ``previous`` (None: the first of the partition)."""
    entry = {
        **content,
        "partition": partition,
        "seq": 1 if previous is None else int(previous["seq"]) + 1,
        "prev": GENESIS if previous is None else str(previous["hash"]),
    }
    entry["hash"] = entry_hash(entry)
    return entry


def entry_content(subject: str, event: Any, applied: bool, recorded_at: int) -> dict[str, Any]:
    """Return the ledger's view of a consent change: everything but personal data."""
    attrs = event.attrs
    return {
        "subject": subject, "channel": attrs["channel"], "purpose": attrs["purpose"],
        "granted": bool(attrs["granted"]), "source": attrs["source"], "text_version": attrs["text_version"],
        "event_id": event.event_id, "event_time": event.event_time, "recorded_at": recorded_at,
        "applied": applied,
    }


@dataclass(frozen=True)
class Problem:
    """The first place a partition's chain breaks."""

    partition: int
    seq: int
    kind: str  # changed, missing, reordered, unreadable
    detail: str

    def __str__(self) -> str:
        return f"partition {self.partition}, entry {self.seq}: {self.kind}: {self.detail}"


def verify_partition(partition: int, stored: Mapping[bytes, bytes | None]) -> tuple[int, str, Problem | None]:
    """Check one partition's entries (table key -> value); return (entries, head hash, first problem)."""
    entries = sorted((seq, value) for key, value in stored.items()
                     if (seq := seq_of(key)) is not None and value is not None)
    count, head_hash, problem = _walk(partition, entries)
    head = stored.get(HEAD_KEY)
    if problem is None and head is not None:
        recorded = orjson.loads(head)
        if int(recorded["seq"]) > count:
            problem = Problem(partition, count + 1, "missing",
                              f"the chain ends at entry {count}, but its head says {recorded['seq']} entries")
    return count, head_hash, problem


def _walk(partition: int, entries: list[tuple[int, bytes]]) -> tuple[int, str, Problem | None]:
    previous_hash, expected = GENESIS, 1
    for seq, value in entries:
        if seq != expected:
            return expected - 1, previous_hash, Problem(
                partition, expected, "missing", f"the chain jumps from entry {expected - 1} to entry {seq}")
        try:
            entry = orjson.loads(value)
        except orjson.JSONDecodeError:
            return seq - 1, previous_hash, Problem(partition, seq, "unreadable", "the stored entry is not JSON")
        problem = _check_entry(partition, seq, entry, previous_hash)
        if problem is not None:
            return seq - 1, previous_hash, problem
        previous_hash, expected = entry["hash"], seq + 1
    return expected - 1, previous_hash, None


def _check_entry(partition: int, seq: int, entry: Mapping[str, Any], previous_hash: str) -> Problem | None:
    if entry.get("seq") != seq or entry.get("partition") != partition:
        return Problem(partition, seq, "reordered",
                       f"the entry stored here says partition {entry.get('partition')}, entry {entry.get('seq')}")
    if entry.get("hash") != entry_hash(entry):
        return Problem(partition, seq, "changed", "its content does not match its hash")
    if entry.get("prev") != previous_hash:
        return Problem(partition, seq, "reordered",
                       "its link does not match the hash of the entry before it; an entry before it "
                       "was replaced, or entries were moved")
    return None


def subject_entries(values: Iterable[bytes | None], subject: str) -> list[dict[str, Any]]:
    """Return the stored entries about ``subject`` in chain order."""
    found = []
    for value in values:
        if value is None:
            continue
        entry = orjson.loads(value)
        if entry.get("subject") == subject:
            found.append(entry)
    return sorted(found, key=lambda entry: (entry["partition"], entry["seq"]))
