"""Fetched records go to the conductor by a plain await only when nothing can make the hand-off wait."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, AsyncIterator

import pytest
from faust.types import TP

from nurture.streams.faust_drain import can_hand_off_at_once, drain

CLICKS = TP("events.click", 0)
FORMS = TP("events.form", 3)


class Queue:
    def __init__(self, full: bool = False) -> None:
        self.is_full = full

    def full(self) -> bool:
        return self.is_full


class StandIn:
    """The parts of Faust's consumer, app and conductor that ``drain`` reads, with a fixed fetch."""

    def __init__(self, records: list[tuple[TP, int]]) -> None:
        self.records = records
        self.queues = {CLICKS: Queue(), FORMS: Queue()}
        self.flow_active = True
        conductor = SimpleNamespace(_tp_to_callback_lock=asyncio.Lock(),
                                    _tp_index=defaultdict(list), acks_enabled_for=lambda topic: True)
        for tp, queue in self.queues.items():
            conductor._tp_index[tp] = [SimpleNamespace(queue=queue)]
        self.app = SimpleNamespace(topics=conductor, flow_control=SimpleNamespace(is_active=lambda: self.flow_active),
                                   producer=SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100)))
        self.suspend_flow = asyncio.Event()
        self._stopped = asyncio.Event()
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.handed: list[tuple[TP, int, str]] = []  # (partition, offset, "await" or "wait_first")
        self.gaps: list[tuple[TP, int, int]] = []
        self._way = "await"

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        for tp, offset in self.records:
            yield tp, SimpleNamespace(tp=tp, topic=tp.topic, offset=offset)
        self.fetcher._stopped.set()

    async def callback(self, message: Any) -> None:
        self.handed.append((message.tp, message.offset, self._way))

    async def wait_first(self, *coros: Any) -> None:
        self._way = "wait_first"
        await coros[0]
        coros[1].close()
        self._way = "await"

    async def _add_gap(self, tp: TP, first: int, last: int) -> None:
        self.gaps.append((tp, first, last))


def run_drain(consumer: StandIn) -> None:
    asyncio.run(drain(consumer, consumer.fetcher))


def test_free_partition_handed_at_once() -> None:
    assert can_hand_off_at_once(StandIn([]), CLICKS)


@pytest.mark.parametrize("block", ["flow stopped", "flow suspended", "callbacks rebuilt", "producer buffer over",
                                   "queue full"])
def test_blocking_state_takes_slow_path(block: str) -> None:
    consumer = StandIn([])

    async def check() -> bool:
        if block == "flow stopped":
            consumer.suspend_flow.set()
        elif block == "flow suspended":
            consumer.flow_active = False
        elif block == "callbacks rebuilt":
            await consumer.app.topics._tp_to_callback_lock.acquire()
        elif block == "producer buffer over":
            consumer.app.producer.buffer.size = 101
        else:
            consumer.queues[CLICKS].is_full = True
        return can_hand_off_at_once(consumer, CLICKS)

    assert not asyncio.run(check())


def test_other_partition_full_ignored() -> None:
    consumer = StandIn([])
    consumer.queues[FORMS].is_full = True

    assert can_hand_off_at_once(consumer, CLICKS)


def test_drain_keeps_order_and_offsets() -> None:
    consumer = StandIn([(CLICKS, 0), (FORMS, 7), (CLICKS, 1)])

    run_drain(consumer)

    assert consumer.handed == [(CLICKS, 0, "await"), (FORMS, 7, "await"), (CLICKS, 1, "await")]
    assert consumer._read_offset == {CLICKS: 1, FORMS: 7}


def test_drain_full_queue_uses_wait_first() -> None:
    consumer = StandIn([(CLICKS, 0), (FORMS, 7)])
    consumer.queues[FORMS].is_full = True

    run_drain(consumer)

    assert consumer.handed == [(CLICKS, 0, "await"), (FORMS, 7, "wait_first")]


def test_drain_drops_old_records_marks_gaps() -> None:
    consumer = StandIn([(CLICKS, 4), (CLICKS, 9)])
    consumer._read_offset[CLICKS] = 5

    run_drain(consumer)

    assert consumer.handed == [(CLICKS, 9, "await")]
    assert consumer.gaps == [(CLICKS, 6, 9)]
