"""The de-duplication store of `nurture deliver`, on real SQLite files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nurture.streams.deliver_store import RETENTION_MS, DeliveryStore, StoreError

NOW = 1_733_330_000_000
DAY_MS = 24 * 3600 * 1000


def test_unknown_command_not_found(tmp_path: Path) -> None:
    store = DeliveryStore.open(tmp_path)

    assert store.lookup("c1") is None


def test_record_then_publish(tmp_path: Path) -> None:
    store = DeliveryStore.open(tmp_path)
    store.record("c1", "lead-1", b'{"status": "sent"}', NOW)

    pending = store.lookup("c1")
    store.mark_published("c1")
    published = store.lookup("c1")

    assert pending is not None
    assert pending.published is False
    assert pending.feedback == b'{"status": "sent"}'
    assert pending.lead_id == "lead-1"
    assert published is not None
    assert published.published is True


def test_survives_reopen(tmp_path: Path) -> None:
    state_dir = tmp_path / "state" / "deliver"
    first = DeliveryStore.open(state_dir)
    first.record("c1", "lead-1", b"one", NOW)
    first.mark_published("c1")
    first.record("c2", "lead-2", b"two", NOW)
    first.close()

    second = DeliveryStore.open(state_dir)

    assert second.lookup("c1").published is True
    assert second.lookup("c2").published is False
    assert second.lookup("c2").feedback == b"two"


def test_second_record_keeps_first_outcome(tmp_path: Path) -> None:
    store = DeliveryStore.open(tmp_path)
    store.record("c1", "lead-1", b"first", NOW)
    store.record("c1", "lead-1", b"second", NOW + 1000)

    assert store.lookup("c1").feedback == b"first"
    assert store.lookup("c1").handled_at == NOW


def test_purge_keeps_seven_days(tmp_path: Path) -> None:
    store = DeliveryStore.open(tmp_path)
    for command_id, handled_at in (("old", NOW - 8 * DAY_MS), ("week", NOW - RETENTION_MS),
                                   ("new", NOW - DAY_MS)):
        store.record(command_id, "lead-1", b"x", handled_at)
        store.mark_published(command_id)

    removed = store.purge(NOW)

    assert RETENTION_MS >= 7 * DAY_MS
    assert removed == 1
    assert store.lookup("old") is None
    assert store.lookup("week") is not None
    assert store.lookup("new") is not None


def test_purge_keeps_unpublished_feedback(tmp_path: Path) -> None:
    store = DeliveryStore.open(tmp_path)
    store.record("pending", "lead-1", b"x", NOW - 30 * DAY_MS)

    assert store.purge(NOW) == 0
    assert store.lookup("pending") is not None


def test_unusable_state_dir_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    with pytest.raises(StoreError, match=f"cannot open the de-duplication store {blocker}/delivered.sqlite3"):
        DeliveryStore.open(blocker)
