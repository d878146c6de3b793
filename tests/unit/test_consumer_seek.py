"""Input records before the seek of an assignment are dropped, and a jump past the next offset is sought back."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from nurture.streams.faust_fixes import _Consumer

CLICKS = TP("events.click", 5)
FORMS = TP("events.form", 5)


def consumer_at(next_offsets: dict[TP, int], *, in_transaction: bool = False) -> Any:
    """The state that ``getmany`` reads, without a Faust app around it; ``sought`` lists its seeks.

    The partitions of ``next_offsets`` count as sought to their committed offsets.
    """
    consumer: Any = object.__new__(_Consumer)
    consumer.app = SimpleNamespace(in_transaction=in_transaction,
                                   topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
    consumer._next_offsets, consumer._jump_seeks, consumer.sought = dict(next_offsets), {}, []
    consumer._sought = set(next_offsets)

    async def seek(tp: TP, offset: int) -> None:
        consumer.sought.append((tp, offset))

    consumer.seek = seek
    return consumer


def fetch(monkeypatch: pytest.MonkeyPatch, records: list[tuple[TP, int]]) -> None:
    async def fetched(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        for tp, offset in records:
            yield tp, SimpleNamespace(offset=offset)

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", fetched)


def drain(consumer: Any) -> list[tuple[TP, int]]:
    async def run() -> list[tuple[TP, int]]:
        return [(tp, message.offset) async for tp, message in _Consumer.getmany(consumer, 1.0)]

    return asyncio.run(run())


def test_jump_seeks_back_and_holds_the_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_at({CLICKS: 36, FORMS: 10})
    fetch(monkeypatch, [(CLICKS, 70), (FORMS, 10), (CLICKS, 71), (FORMS, 11)])

    delivered = drain(consumer)

    assert delivered == [(FORMS, 10), (FORMS, 11)]
    assert consumer.sought == [(CLICKS, 36)]
    assert consumer._next_offsets == {CLICKS: 36, FORMS: 12}


def test_second_jump_taken_as_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_at({CLICKS: 36})
    consumer._jump_seeks = {CLICKS: 36}  # sought back once already, and 36 is a transaction marker
    fetch(monkeypatch, [(CLICKS, 37), (CLICKS, 38)])

    assert drain(consumer) == [(CLICKS, 37), (CLICKS, 38)]
    assert consumer.sought == []


def test_exactly_once_checks_only_first_record_after_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_at({CLICKS: 36, FORMS: 10}, in_transaction=True)
    # clicks: the first record after the seek jumps; forms: 12 follows a transaction marker at 11
    fetch(monkeypatch, [(CLICKS, 70), (FORMS, 10), (FORMS, 12)])

    assert drain(consumer) == [(FORMS, 10), (FORMS, 12)]
    assert consumer.sought == [(CLICKS, 36)]
    assert consumer._next_offsets == {CLICKS: 36}


def test_seek_to_committed_sets_next_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_at({TP("events.open", 1): 7})  # left over from an earlier assignment
    consumer._jump_seeks = {CLICKS: 30}

    async def committed(self: Any) -> dict[TP, int | None]:
        return {CLICKS: 36, FORMS: None, TP("events.open", 2): -1}

    monkeypatch.setattr(faust_aiokafka.Consumer, "seek_to_committed", committed)

    asyncio.run(_Consumer.seek_to_committed(consumer))

    assert consumer._next_offsets == {CLICKS: 36}
    assert consumer._jump_seeks == {}
    assert consumer._sought == {CLICKS, FORMS, TP("events.open", 2)}


def test_records_before_seek_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_at({FORMS: 10})
    consumer._sought = set()  # assigned, and the recovery has not sought them yet
    fetch(monkeypatch, [(CLICKS, 70), (FORMS, 10), (CLICKS, 36)])

    assert drain(consumer) == []
    assert consumer.sought == []

    consumer._sought = {CLICKS, FORMS}
    fetch(monkeypatch, [(CLICKS, 36), (FORMS, 10)])
    assert drain(consumer) == [(CLICKS, 36), (FORMS, 10)]


def test_assignment_closes_partitions_until_seek(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = consumer_at({CLICKS: 36})
    assigned: list[set[TP]] = []

    async def on_assigned(self: Any, partitions: set[TP], generation_id: int = 0) -> None:
        assigned.append(partitions)

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_assigned", on_assigned)

    asyncio.run(_Consumer.on_partitions_assigned(consumer, {CLICKS}, 4))

    assert consumer._sought == set()
    assert assigned == [{CLICKS}]


def test_livelock_check_skips_partition_without_position(monkeypatch: pytest.MonkeyPatch) -> None:
    from nurture.streams.faust_fixes import _ConsumerThread

    states = {"events.click": SimpleNamespace(has_valid_position=False),
              "events.form": SimpleNamespace(has_valid_position=True)}
    assignment = SimpleNamespace(state_value=lambda tp: states.get(tp.topic))
    fetcher = SimpleNamespace(_subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment)))
    thread: Any = object.__new__(_ConsumerThread)
    thread._ensure_consumer = lambda: SimpleNamespace(_fetcher=fetcher)
    checked: list[TP] = []
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "verify_event_path",
                        lambda self, now, tp: checked.append(tp))

    for tp in (CLICKS, FORMS, TP("events.open", 5)):
        thread.verify_event_path(0.0, tp)

    assert checked == [FORMS]
