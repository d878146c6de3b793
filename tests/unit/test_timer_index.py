"""The timer index on a real RocksDB database: due order, floors, tombstones and notices."""

from __future__ import annotations

import pytest
from faust.stores.rocksdb import RocksDBOptions

from nurture.streams.timers import Floors, NoticeLog, due_keys, find_due, index_key, parse_index_key

NOW = 1_800_000_000_000


@pytest.fixture()
def db(tmp_path):
    database = RocksDBOptions(use_rocksdict=True).open(tmp_path / "index.db")
    yield database
    database.close()


def test_index_key_round_trip():
    assert parse_index_key(index_key(NOW, b"lead-1")) == (NOW, b"lead-1")


def test_due_keys_in_due_order(db):
    for due, lead in ((NOW - 5, b"b"), (NOW + 5, b"c"), (NOW - 10, b"a"), (NOW, b"d")):
        db.put(index_key(due, lead), b"1")
    db.put(b"__faust\x00offset__", b"42")  # Faust's own key in the same database
    assert [parse_index_key(key)[1] for key in due_keys(db, NOW)] == [b"a", b"b", b"d"]


def test_notice_not_repeated_soon(db):
    db.put(index_key(NOW - 1, b"a"), b"1")
    notices = NoticeLog(repeat_ms=10_000)
    assert len(find_due({0: db}, {0}, NOW, notices)) == 1
    assert find_due({0: db}, {0}, NOW + 1_000, notices) == []
    assert len(find_due({0: db}, {0}, NOW + 10_000, notices)) == 1


def test_only_listed_partitions(db, tmp_path):
    other = RocksDBOptions(use_rocksdict=True).open(tmp_path / "other.db")
    try:
        db.put(index_key(NOW - 1, b"a"), b"1")
        other.put(index_key(NOW - 1, b"b"), b"1")
        found = find_due({0: db, 1: other}, {1}, NOW, NoticeLog())
        assert [(notice.lead_id, notice.partition) for notice in found] == [(b"b", 1)]
    finally:
        other.close()


def test_floor_skips_fired_entries(db):
    fired = [index_key(NOW - 1_000 + i, f"old-{i}".encode()) for i in range(50)]
    for key in fired:
        db.put(key, b"1")
    db.put(index_key(NOW + 60_000, b"future"), b"1")
    floors = Floors()
    assert len(find_due({0: db}, {0}, NOW, NoticeLog(), floors)) == 50
    for key in fired:
        db.delete(key)
    # Nothing is due, so the floor moves to the first future entry.
    assert find_due({0: db}, {0}, NOW, NoticeLog(), floors) == []
    assert floors.get(0) == index_key(NOW + 60_000, b"future")


def test_floor_lowered_by_new_entry(db):
    db.put(index_key(NOW + 60_000, b"future"), b"1")
    floors = Floors()
    find_due({0: db}, {0}, NOW, NoticeLog(), floors)
    early = index_key(NOW - 5, b"late-event")
    db.put(early, b"1")
    floors.lower(0, early)
    assert [notice.lead_id for notice in find_due({0: db}, {0}, NOW, NoticeLog(), floors)] == [b"late-event"]


def test_floor_forgotten_on_reassignment(db):
    floors = Floors()
    floors.assign({0})
    floors.set(0, index_key(NOW, b""))
    floors.assign(set())
    floors.assign({0})
    assert floors.get(0) is None
