"""Tables whose changelog records leave once per agent batch, in Kafka record batches per partition.

A write to a plain Faust table goes to RocksDB and queues one changelog record
for Faust's producer buffer, which a background task hands to aiokafka one
record at a time, each with its own future and callback. A :class:`BatchedTable`
writes RocksDB at once, as Faust does, but keeps the changelog records of the
current agent batch in memory, the last value per key. ``send_changelog_batch``
then builds Kafka record batches of up to the producer's batch size, per
changelog partition, and hands them to the aiokafka producer whose transaction
commits that partition's input records, or to the plain producer under
at-least-once. ``docs/benchmarks.md`` gives the gain.

The records are the ones Faust would send: the same keys and values, to the
partition of the record being processed. Recovery and standby replicas read
them as before. The offset of a partition's last record is stored as Faust
stores it: at the next commit under exactly-once, at once under at-least-once.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import faust
from faust.types import TP


class ChangelogBuffer:
    """Changelog records waiting to be sent, by transactional id and partition, the last value per key."""

    def __init__(self) -> None:
        self.writes: dict[tuple[str | None, int], dict[bytes, bytes | None]] = {}

    def add(self, transactional_id: str | None, partition: int, key: bytes, value: bytes | None) -> None:
        writes = self.writes.setdefault((transactional_id, partition), {})
        writes.pop(key, None)  # a key written again moves to the end, so its last value is sent last
        writes[key] = value

    async def send(self, topic: str, producer_of: Callable[[str | None], Any],
                   on_sent: Callable[[TP, int], None]) -> list[Awaitable[Any]]:
        """Send every record in as few record batches as fit; return their futures.

        ``producer_of(transactional_id)`` returns the aiokafka producer to use, and
        ``on_sent(tp, offset)`` gets the offset of each batch's last record once the broker has it.
        """
        writes, self.writes = self.writes, {}
        futures = []
        for (transactional_id, partition), records in writes.items():
            producer = producer_of(transactional_id)
            batch, count = producer.create_batch(), 0
            for key, value in records.items():
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await _send(producer, batch, TP(topic, partition), count, on_sent))
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None)  # the first record always fits
                count += 1
            futures.append(await _send(producer, batch, TP(topic, partition), count, on_sent))
        return futures


async def _send(producer: Any, batch: Any, tp: TP, count: int,
                on_sent: Callable[[TP, int], None]) -> Awaitable[Any]:
    future = await producer.send_batch(batch, tp.topic, partition=tp.partition)

    def sent(done: Any) -> None:
        if not done.cancelled() and done.exception() is None:
            on_sent(tp, done.result().offset + count - 1)  # a failure is raised where the future is awaited

    future.add_done_callback(sent)
    return future


class BatchedTable(faust.Table):
    """A Faust table that keeps its changelog records until ``send_changelog_batch``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unsent = ChangelogBuffer()

    def on_key_set(self, key: Any, value: Any) -> None:
        self._queue(key, value)

    def on_key_del(self, key: Any) -> None:
        self._queue(key, None)

    def _queue(self, key: bytes, value: bytes | None) -> None:
        event = faust.current_event()
        if event is None:
            raise RuntimeError(f"cannot write table {self.name} outside of an agent's event; "
                               "make the record being processed Faust's current event first")
        message = event.message
        transactional_id = (transactional_id_for(self.app, message.topic, message.partition)
                            if self.app.in_transaction else None)
        self.unsent.add(transactional_id, message.partition, key, value)

    async def send_changelog_batch(self) -> list[Awaitable[Any]]:
        """Hand every queued changelog record to the producer; return the futures of their batches."""
        # client_of is in streams/faust_fixes.py.
        return await self.unsent.send(self.changelog_topic.get_topic_name(), self.app.producer.client_of,
                                      self._persist_offset)

    def _persist_offset(self, tp: TP, offset: int) -> None:
        if self.app.in_transaction:
            self.app.tables.persist_offset_on_commit(self.data, tp, offset)
        else:
            self.data.set_persisted_offset(tp, offset)


def transactional_id_for(app: faust.App, topic: str, partition: int) -> str:
    """Return the transactional id whose transaction commits ``topic``'s ``partition``.

    Faust's TransactionManager.commit derives it the same way.
    """
    group = app.assignor.group_for_topic(topic)
    return f"{app.conf.id}-{group}-{partition}"


def batched_table(app: faust.App, name: str, **kwargs: Any) -> BatchedTable:
    """Define a :class:`BatchedTable` on ``app``, as ``app.Table`` would define a plain one."""
    table = BatchedTable(app, name=name, beacon=app.tables.beacon, **kwargs)
    return app.tables.add(table)  # type: ignore[return-value]
