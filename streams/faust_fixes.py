"""Fixes for Faust's consumer, table recovery and worker that the fault tests and benchmarks needed.

- Table recovery reads each changelog partition up to its end. Under
  exactly-once, Faust takes that end from the last stable offset of fetch
  responses, which is unknown before the first fetch of a partition. Recovery
  then took -1 for the end: a worker that took a partition over started it with
  an empty table, or stopped with ConsistencyError when it had rows on disk.
  The end now comes from a ListOffsets request, which with read_committed
  returns the last stable offset.
- Records fetched while a rebalance suspends the flow are dropped, to be read
  again from the committed offset. A partition with no committed offset yet
  stayed where the fetch had got to, so its first records were lost. Such
  partitions now start from their first offset.
- Faust commits every few seconds, whatever the agent is doing. Under
  exactly-once a commit in the middle of a batch made the batch's commands
  visible without the offsets of its records, which were not yet acknowledged,
  so a rebalance before the next commit processed them again and published the
  commands twice. A commit now waits for the batch in progress (``commit_gate``).
- At a rebalance Faust forgets the acknowledged offsets of every partition
  before it waits for the agents, so nothing processed since the last commit is
  committed. A partition the worker keeps then keeps its open transaction, is
  read again from the committed offset, and the records read again add their
  commands to that transaction a second time. The consumer now finishes the
  batch in progress and commits every acknowledged offset first.
- At a rebalance Faust kept the transactional producer of every partition
  it did not see revoked, and it did not always see them: a worker that lost
  partitions to another one and got them back used its old producers, which
  the other worker had fenced. Its next send failed with "Can't send messages
  while not in transaction" and the worker crashed. Every rebalance now starts
  fresh producers for the partitions assigned. Their start aborts what an
  earlier owner left open, including this worker's own open transactions,
  which hold nothing acknowledged once the revocation commit has run.
- A worker that took over a killed worker's partition could fetch past the
  committed offset before the seek to it took hold. Faust then counted the
  records in between as done, so they were committed without being
  processed. An input partition that jumps ahead is now sought back to the
  offset its next record must have.
- After a rebalance Faust resumes the input partitions before it seeks them
  to their committed offsets, and records fetched in that window reached the
  agent. One worker that took a partition over handled records from far past
  the committed offset first, and the events in between were never handled.
  Records of an input partition are now dropped until the seek of the current
  assignment has run.
- Faust's livelock check read the position of every assigned partition,
  and aiokafka asserts when an offset reset is still pending, as right after
  a new partition is sought to its first offset. The consumer crashed, and
  the worker with it. The check now skips such partitions.
- Resuming flow control empties every stream queue and the changelog queue,
  and Faust resumes it at several steps of a recovery, also when it is on
  already. At the end of recovery Faust seeks the input partitions to their
  committed offsets and then resumes flow control. A record fetched in between
  was queued, thrown away and counted as done. One test run lost the first
  record of a new input partition this way. Changelog records of standby
  partitions were exposed the same way. Flow control now empties the queues
  only when it resumes from off, as after the clear at a rebalance.
- Faust commits the transaction of each partition after the one before it,
  each with three requests to the broker (AddOffsetsToTxn, TxnOffsetCommit
  and EndTxn), while the agent waits. The transactions of a commit now run
  at the same time.
- Faust hands each fetched record to the streams inside four tasks, which
  cost most of its consumer path. The records now go by a plain await
  whenever nothing can make the hand-off wait (streams/faust_drain.py).
- At a log level of warning or above, Faust's worker lowers the root logger to
  DEBUG for its progress spinner, and the libraries' debug records cost about
  4 % of the worker's time. ``Worker`` leaves the spinner out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import structlog
from aiokafka import TopicPartition
from faust.tables.manager import TableManager
from faust.transport.consumer import TransactionManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from nurture.streams.faust_drain import drain
from nurture.streams.faust_recovery import FixedRecovery

log = structlog.get_logger("nurture.rebalance")


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[Any]) -> Any:
        # With isolation_level read_committed, ListOffsets returns the last stable offset.
        return await self._ensure_consumer().end_offsets(partitions)

    async def seek_to_committed(self) -> Any:
        return await self.call_thread(self._seek_to_committed)

    def verify_event_path(self, now: float, tp: Any) -> Any:
        # Faust's livelock check reads the position, which aiokafka asserts on while an offset
        # reset is pending, as after the seek to the first offset below.
        consumer = self._ensure_consumer()
        # NOTE: _fetcher and _subscriptions are private to aiokafka (0.10 to 0.14).
        state = consumer._fetcher._subscriptions.subscription.assignment.state_value(
            TopicPartition(tp.topic, tp.partition))
        if state is None or not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)

    async def _seek_to_committed(self) -> Any:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = set(self.app.tables.changelog_topics)
        uncommitted = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
        if uncommitted and self.app.conf.consumer_auto_offset_reset == "earliest":
            await consumer.seek_to_beginning(*uncommitted)
        return committed


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_offsets: dict[Any, int] = {}  # input partition -> offset its next record must have
        self._jump_seeks: dict[Any, int] = {}  # input partition -> offset it was sought back to after a jump
        self._sought: set[Any] = set()  # partitions sought to their committed offsets since the last assignment

    async def seek_to_committed(self) -> Any:
        committed = await super().seek_to_committed()
        # Only these offsets are known to be the next record to process; Faust's read offsets
        # of other partitions can be left over from an earlier assignment.
        self._next_offsets = {tp: offset for tp, offset in committed.items() if offset is not None and offset >= 0}
        self._jump_seeks = {}
        self._sought = set(committed)
        return committed

    async def on_partitions_assigned(self, assigned: set[Any], *args: Any, **kwargs: Any) -> None:
        self._sought = set()  # closed until the recovery that follows seeks them
        await super().on_partitions_assigned(assigned, *args, **kwargs)

    async def getmany(self, timeout: float) -> Any:
        """Yield Faust's fetched records, except those fetched before a seek, and go back at a jump.

        After a rebalance Faust resumes the input partitions and only then seeks
        them to their committed offsets, so records fetched in between came from
        an older position. They are dropped until the seek has run.

        Faust counts the offsets between the last record it read and a later
        one as done, which suits transaction markers. After a rebalance its
        fetch could run past the committed offset before the seek to it took
        hold, and the records in between were committed without being
        processed. A partition that jumps is sought back once; a second jump
        to the same offset is a real gap. Under at-least-once every record is
        checked, since input topics carry no markers then. Under exactly-once
        only the first record after a seek is, since markers make later jumps
        normal.
        """
        skipped: set[Any] = set()  # partitions whose other records in this fetch are dropped too
        async for tp, message in super().getmany(timeout):
            if tp in skipped:
                continue
            if tp not in self._sought and self.app.topics.acks_enabled_for(tp.topic):
                skipped.add(tp)
                log.info("input_records_before_seek_dropped", topic=tp.topic, partition=tp.partition,
                         offset=message.offset)
                continue
            expected = self._next_offsets.get(tp)
            if (expected is not None and message.offset > expected and self._jump_seeks.get(tp) != expected
                    and self.app.topics.acks_enabled_for(tp.topic)):
                log.warning("input_partition_jumped", topic=tp.topic, partition=tp.partition, expected=expected,
                            offset=message.offset)
                skipped.add(tp)
                self._jump_seeks[tp] = expected
                await self.seek(tp, expected)
                continue
            if self.app.in_transaction:
                self._next_offsets.pop(tp, None)
            else:
                self._next_offsets[tp] = max(message.offset + 1, expected or 0)
            yield tp, message

    async def _drain_messages(self, fetcher: Any) -> None:
        # NOTE: _drain_messages is private to Faust's Consumer (faust-streaming 0.11 to 0.15).
        await drain(self, fetcher)

    async def commit(self, *args: Any, **kwargs: Any) -> bool:
        # Between two batches: every record of the last one is acknowledged with its outputs.
        async with self.app.commit_gate:
            return await super().commit(*args, **kwargs)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.commit_before_revocation()
        await super().on_partitions_revoked(revoked)

    async def commit_before_revocation(self) -> None:
        """Stop the flow, let the agent finish its batch, and commit what it acknowledged.

        Under exactly-once this closes every open transaction, so no partition
        enters the new assignment with outputs of records it will read again.
        """
        assignment = self.assignment()
        if not assignment or self.app.should_stop:
            return
        self.stop_flow()
        self.app.flow_control.suspend()
        self.pause_partitions(assignment)
        self.app.flow_control.clear()
        log.info("rebalance_commit", partitions=len(assignment))
        await self.wait_empty()  # commits, under the gate, until every record in flight is acknowledged


class _TransactionManager(TransactionManager):
    async def on_rebalance(self, assigned: Any, revoked: Any, newly_assigned: Any) -> None:
        # NOTE: _transaction_producers is private to Faust's aiokafka producer (faust-streaming 0.15).
        producers = sorted(self.producer._transaction_producers)
        if producers:
            log.info("transactional_producers_restarted", count=len(producers))
            await self._stop_transactions(producers)
        await super().on_rebalance(assigned, set(), newly_assigned)


class _Producer(faust_aiokafka.Producer):
    def client_of(self, transactional_id: str | None) -> Any:
        """Return the aiokafka producer of ``transactional_id``, or the one outside transactions for None."""
        if transactional_id is None:
            return self._ensure_producer()
        # NOTE: _transaction_producers is private to Faust's aiokafka producer (faust-streaming 0.15).
        producer = self._transaction_producers.get(transactional_id)
        if producer is None:
            raise RuntimeError(f"no transactional producer {transactional_id!r}: its partition is not "
                               "assigned to this worker")
        return producer

    async def commit_transactions(self, tid_to_offset_map: Any, group_id: str,
                                  start_new_transaction: bool = True) -> None:
        """Commit the transactions of every producer in the map at once, then raise the first error, if any."""
        results = await asyncio.gather(
            *(self._commit_transaction(transactional_id, offsets, group_id, start_new_transaction)
              for transactional_id, offsets in tid_to_offset_map.items()),
            return_exceptions=True)
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]

    async def _commit_transaction(self, transactional_id: str, offsets: Any, group_id: str,
                                  start_new_transaction: bool) -> None:
        # NOTE: _trn_locks and _transaction_producers are private to Faust's aiokafka producer
        # (faust-streaming 0.15). The body is Faust's loop body for one transactional id.
        async with self._trn_locks[transactional_id]:
            producer = self._transaction_producers.get(transactional_id)
            if producer is None:
                log.warning("commit_of_unknown_transaction", transactional_id=transactional_id)
                return
            await producer.send_offsets_to_transaction(offsets, group_id)
            await producer.commit_transaction()
            if start_new_transaction:
                await producer.begin_transaction()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer
    Producer = _Producer
    TransactionManager = _TransactionManager


class _FlowControl(FlowControlEvent):
    """Flow control of the streams that keeps the queued records when it is resumed while on."""

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class App(faust.App):
    """A Faust app with the consumer fixes of this module.

    ``commit_gate`` is held by the agent while it processes a batch and
    acknowledges its records; the consumer commits only while it is free.
    ``batch_in_flight`` is true from the start of a batch until its records are
    acknowledged, and stays true if the agent stops in between.
    ``tables_owned`` is set by the worker command once it holds the data
    directory's lock; only then may the tables directory be reset or marked.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commit_gate = asyncio.Lock()
        self.batch_in_flight = False
        self.tables_owned = False

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _FlowControl(loop=self.loop)

    def _new_transport(self) -> Any:
        # NOTE: _new_transport is private to faust.App (faust-streaming 0.11 to 0.15).
        return _Transport(self.conf.broker_consumer, self)


class Worker(faust.Worker):
    """Faust's worker without its progress spinner.

    At a log level of warning or above, Faust's worker adds a spinner handler and
    lowers the root logger to DEBUG. Every debug record of aiokafka and Faust
    (several per record sent) is then built and formatted only to be dropped.
    Without the spinner, the root logger keeps the level that ``[log]`` sets.
    """

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None




class FixedTableManager(TableManager):
    """Faust's table manager with the fixes of this module; pass it as the TableManager setting.

    Under exactly-once Faust keeps the offset of each changelog write until a
    commit, keyed by the changelog partition, but looks it up by the committed
    source partitions, so it never stored one. A worker that kept its tables
    then read every changelog again from its start. A commit of partition P
    now stores the pending offsets of changelog partition P, where every table
    write of P's records goes.
    """

    def on_commit(self, offsets: Any) -> None:
        committed = {tp.partition for tp in offsets}
        for changelog_tp in [tp for tp in self._pending_persisted_offsets if tp.partition in committed]:
            store, offset = self._pending_persisted_offsets.pop(changelog_tp)
            store.set_persisted_offset(changelog_tp, offset)

    @property
    def recovery(self) -> FixedRecovery:
        if self._recovery is None:
            self._recovery = FixedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
