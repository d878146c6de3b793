"""The consent ledger's chain names the first entry that was changed, removed or reordered."""

from __future__ import annotations

import orjson
import pytest

from factories import T0, consent
from nurture.agents.privacy.ledger import HEAD_KEY, entry_content, entry_hash, entry_key, verify_partition
from nurture.streams.ledger_store import LedgerStore


@pytest.fixture()
def chain() -> dict[bytes, bytes]:
    store = LedgerStore({})
    for number in range(6):
        change = consent("l", T0 + number, granted=number % 2 == 0)
        store.append(3, entry_content(f"subject-{number % 2}", change, True, T0 + 100))
    return store.table


def _edit(table: dict[bytes, bytes], seq: int, **changes: object) -> None:
    entry = orjson.loads(table[entry_key(seq)])
    entry.update(changes)
    table[entry_key(seq)] = orjson.dumps(entry)


def test_intact_chain(chain) -> None:
    count, head, problem = verify_partition(3, chain)
    assert (count, problem) == (6, None)
    assert head == orjson.loads(chain[entry_key(6)])["hash"]


def test_changed_entry_is_named(chain) -> None:
    _edit(chain, 4, granted=True)
    assert str(verify_partition(3, chain)[2]) == "partition 3, entry 4: changed: its content does not match its hash"


def test_changed_entry_with_new_hash_breaks_the_next_link(chain) -> None:
    entry = orjson.loads(chain[entry_key(2)])
    entry["text_version"] = "forged"
    entry["hash"] = entry_hash(entry)
    chain[entry_key(2)] = orjson.dumps(entry)
    problem = verify_partition(3, chain)[2]
    assert (problem.seq, problem.kind) == (3, "reordered")


def test_removed_entry_is_named(chain) -> None:
    del chain[entry_key(3)]
    problem = verify_partition(3, chain)[2]
    assert (problem.seq, problem.kind) == (3, "missing")


def test_removed_last_entry_is_named_by_the_head(chain) -> None:
    del chain[entry_key(6)]
    problem = verify_partition(3, chain)[2]
    assert (problem.seq, problem.kind) == (6, "missing")


def test_swapped_entries_are_named(chain) -> None:
    chain[entry_key(2)], chain[entry_key(5)] = chain[entry_key(5)], chain[entry_key(2)]
    problem = verify_partition(3, chain)[2]
    assert (problem.seq, problem.kind) == (2, "reordered")
    assert "says partition 3, entry 5" in problem.detail


def test_tombstoned_entry_counts_as_removed(chain) -> None:
    chain[entry_key(1)] = None  # a deletion read back from a changelog
    assert verify_partition(3, chain)[2].seq == 1
    assert orjson.loads(chain[HEAD_KEY])["seq"] == 6
