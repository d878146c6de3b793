"""Changelog records kept per batch: last value per key, record batches, offsets of the last records."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from nurture.streams.changelog import ChangelogBuffer


class Builder:
    """A record batch that takes up to ``room`` records, as aiokafka's BatchBuilder takes up to its size."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.records: list[tuple[bytes, bytes | None]] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: Any) -> Any:
        if self.records and len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()


class Producer:
    """A producer whose batches the broker stores at once, from offset ``next_offset`` on."""

    def __init__(self, room: int, next_offset: int = 100) -> None:
        self.room = room
        self.next_offset = next_offset
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes | None]]]] = []

    def create_batch(self) -> Builder:
        return Builder(self.room)

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.records))
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=self.next_offset))
        self.next_offset += len(batch.records)
        return future


def send(buffer: ChangelogBuffer, producers: dict[str | None, Producer]) -> list[tuple[Any, int]]:
    offsets: list[tuple[Any, int]] = []

    async def run() -> None:
        futures = await buffer.send("leads-changelog", producers.__getitem__,
                                    lambda tp, offset: offsets.append((tp, offset)))
        await asyncio.gather(*futures)

    asyncio.run(run())
    return offsets


def test_key_written_twice_sends_last_value_last() -> None:
    buffer = ChangelogBuffer()
    buffer.add(None, 0, b"lead-1", b"v1")
    buffer.add(None, 0, b"lead-2", b"v1")
    buffer.add(None, 0, b"lead-1", b"v2")
    buffer.add(None, 0, b"lead-2", None)
    producer = Producer(room=10)

    send(buffer, {None: producer})

    assert producer.sent == [("leads-changelog", 0, [(b"lead-1", b"v2"), (b"lead-2", None)])]
    assert buffer.writes == {}


def test_each_partition_goes_to_its_transaction() -> None:
    buffer = ChangelogBuffer()
    buffer.add("app-0-3", 3, b"lead-1", b"v")
    buffer.add("app-0-5", 5, b"lead-2", b"v")
    producers = {"app-0-3": Producer(room=10), "app-0-5": Producer(room=10)}

    send(buffer, producers)

    assert producers["app-0-3"].sent == [("leads-changelog", 3, [(b"lead-1", b"v")])]
    assert producers["app-0-5"].sent == [("leads-changelog", 5, [(b"lead-2", b"v")])]


def test_full_batch_starts_another_batch() -> None:
    buffer = ChangelogBuffer()
    for number in range(5):
        buffer.add(None, 2, f"lead-{number}".encode(), b"v")
    producer = Producer(room=2, next_offset=100)

    offsets = send(buffer, {None: producer})

    assert [len(records) for _, _, records in producer.sent] == [2, 2, 1]
    assert [key for _, _, records in producer.sent for key, _ in records] == [
        f"lead-{number}".encode() for number in range(5)]
    assert [offset for _, offset in offsets] == [101, 103, 104]
    assert {tuple(tp) for tp, _ in offsets} == {("leads-changelog", 2)}
