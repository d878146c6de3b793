"""Exactly-once output of the ingest agent with Kafka transactions.

With ``processing_guarantee = "exactly_once"`` Faust gives every input
partition a transactional producer (transactional id APP_ID-GROUP-PARTITION)
and commits the consumed offsets of that partition inside its transaction.
This module closes three gaps Faust leaves:

- ``Topic.send`` picks the transactional producer from the partition of the
  output topic in the consumer's metadata, which lists only the topics the
  worker reads. Commands and dead letters therefore went out outside any
  transaction. Here they go to the producer of the input record's partition.
- Table writes reach the producer through a buffer that a background task
  drains, and a commit does not wait for it, so a row could land in the
  transaction after the one that commits its event. The tables here keep
  their changelog records until the batch ends (``streams/changelog.py``), and
  the agent waits for them and every output of a batch before the batch is
  acknowledged.
- The local RocksDB files keep writes of transactions that were later aborted.
  A worker removes them at start, and the tables rebuild from the committed
  changelogs (``reset_local_tables``), unless its last stop was clean: then every
  local row is committed, and a mark says so (``mark_clean_stop``).

``streams/faust_fixes.py`` has the fixes for table recovery and the consumer.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any, Awaitable, Iterable

import faust
import structlog

from nurture.config.settings import WorkerSettings
from nurture.streams.changelog import BatchedTable, transactional_id_for
from nurture.streams.faust_fixes import FixedTableManager

EXACTLY_ONCE = "exactly_once"
CLEAN_STOP_FILE = "clean-stop"  # in the tables directory: every local row was committed at the last stop
SETTLE_TIMEOUT_SECONDS = 60.0
log = structlog.get_logger("nurture.transactions")


def faust_options(worker: WorkerSettings) -> dict[str, Any]:
    """Return the Faust settings of the configured processing guarantee."""
    return {
        "TableManager": FixedTableManager,
        "processing_guarantee": worker.processing_guarantee,
        "table_standby_replicas": worker.table_standby_replicas,
        "broker_session_timeout": worker.session_timeout_seconds,
        "broker_commit_interval": worker.commit_interval_ms / 1000.0,
        # NOTE: a broker or topic whose max.message.bytes is below this (Kafka's default is
        # about 1 MB) rejects full changelog record batches (streams/changelog.py).
        "producer_max_batch_size": 512 * 1024,
        # With Faust's 4,096, fetching paused and resumed so often that the agent
        # waited for records (docs/benchmarks.md).
        "stream_buffer_maxsize": worker.stream_buffer_records,
    }


class Outbox:
    """Sender of the agent's outputs, which waits once per batch until the broker has them all."""

    def __init__(self, app: faust.App, tables: Iterable[BatchedTable]) -> None:
        self.app = app
        self.tables = list(tables)
        self.pending: list[Awaitable[Any]] = []

    async def send(self, topic: Any, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send to ``topic`` in the transaction of the record being processed, if any."""
        if not self.app.in_transaction:
            self.pending.append(await topic.send(key=key, value=value, headers=headers))
            return
        record = faust.current_event()
        if record is None:
            raise RuntimeError("missing current event: an exactly-once output joins the transaction of the "
                               "record being processed, so make that record Faust's current event first")
        transactional_id = transactional_id_for(self.app, record.message.topic, record.message.partition)
        self.pending.append(await self.app.producer.send(
            topic.get_topic_name(), key, value, None, None, headers, transactional_id=transactional_id))

    async def send_now(self, topic: Any, key: bytes, value: bytes, partition: int | None = None) -> Any:
        """Send outside any transaction, so that the record is visible at once.

        Timer notices go this way: in a transaction, a notice to a partition with
        no other input would wait for a commit that only its own reading brings.
        """
        if not self.app.in_transaction:
            return await topic.send(key=key, value=value, partition=partition)
        return await self.app.producer.send(topic.get_topic_name(), key, value, partition, None, None)

    async def settle(self) -> None:
        """Wait until every output and changelog write of the batch is acknowledged by the broker."""
        futures = self.pending
        self.pending = []
        for table in self.tables:
            futures.extend(await table.send_changelog_batch())
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=SETTLE_TIMEOUT_SECONDS)

    async def settle_outputs(self) -> None:
        """Wait until every output sent so far, but not the changelog writes, is acknowledged by the broker."""
        futures = self.pending
        self.pending = []
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), timeout=SETTLE_TIMEOUT_SECONDS)


def reset_local_tables(app: faust.App) -> None:
    """Remove the tables' local files, so that they rebuild from their committed changelogs.

    Under exactly-once a worker writes rows to RocksDB before their transaction
    commits. After a crash, those files may hold rows of aborted transactions:
    events whose commands never became visible would then count as seen. After
    a clean stop they hold committed rows only, so they stay, and recovery reads
    just the changelog records written since. Only the worker command calls
    this, after it has locked its data directory. The other commands build the
    same app, so they must not touch the tables of a worker that may be running.
    """
    app.tables_owned = True
    if app.conf.processing_guarantee.value != EXACTLY_ONCE:
        return
    tables = Path(app.conf.tabledir)
    mark = tables / CLEAN_STOP_FILE
    if mark.exists():
        mark.unlink()  # a crash from now on must not find it
        log.info("local_tables_kept", reason="clean_stop")
        return
    if tables.exists():
        log.info("local_tables_reset", reason="exactly_once_start")
        shutil.rmtree(tables)


def mark_clean_stop(app: faust.App) -> None:
    """Mark the local tables as committed, so that the next start keeps them.

    Faust sends ``on_before_shutdown`` after its consumer has let the agent
    finish and committed the acknowledged offsets, and, when it had partitions,
    after it closed the tables. The mark
    is left out when a batch did not finish (its rows may be uncommitted) or the
    worker crashed (its last commit may have failed).
    """
    if app.conf.processing_guarantee.value != EXACTLY_ONCE or not app.tables_owned:
        return
    crash = getattr(app, "crash_reason", None)
    if app.batch_in_flight or crash is not None:
        log.warning("local_tables_not_marked", batch_in_flight=app.batch_in_flight,
                    crash=type(crash).__name__ if crash is not None else None)
        return
    tables = Path(app.conf.tabledir)
    if tables.exists():
        (tables / CLEAN_STOP_FILE).write_text("local rows committed at a clean stop\n", encoding="utf-8")
        log.info("local_tables_marked", reason="clean_stop")
