"""The Faust application: topics, the lead and timer tables, the ingest agent and the timer check."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from pathlib import Path
from typing import Any, Iterable

import faust
import faust.streams as faust_streams
from mode import CrashingSupervisor
import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from nurture.agents.ingest import IngestHandler, Inputs, Outputs, RuntimeHolder
from nurture.agents.privacy.erasure import ErasureMemory
from nurture.agents.privacy.requests import PrivacyParts
from nurture.agents.row_cache import RowCache
from nurture.config.settings import EVENT_KINDS, Settings
from nurture.streams import endpoints
from nurture.streams.batching import take_batches
from nurture.streams.clock import make_clock
from nurture.streams.admin_api import register_admin_api
from nurture.streams.dashboard import register_dashboard
from nurture.streams.erasures import tail_erasures
from nurture.streams.kafka_clients import broker_credentials
from nurture.streams.ledger_store import LedgerStore
from nurture.streams.logs import logging_config
from nurture.streams.metrics import Metrics, PhaseClock
from nurture.streams.timers import DueCount, Floors, NoticeLog, find_due
from nurture.streams.faust_fixes import App as FixedApp
from nurture.streams.faust_fixes import Worker as QuietWorker
from nurture.streams.changelog import batched_table
from nurture.streams.transactions import EXACTLY_ONCE, Outbox, faust_options, mark_clean_stop
from nurture.streams.topics import TABLES
from nurture.agents.sla import Objectives, SlaTracker

LEADS_TABLE, TIMERS_TABLE, LEDGER_TABLE = TABLES  # streams/topics.py creates their changelogs
METRICS_INTERVAL_SECONDS = 5.0
READY_CHECK_SECONDS = 0.2  # how soon nurture_ready follows the first recovery
log = structlog.get_logger("nurture.timers")
worker_log = structlog.get_logger("nurture.worker")


def build_app(settings: Settings, *, store: str = "rocksdb://") -> tuple[faust.App, RuntimeHolder]:
    """Create the Faust app for ``settings``; the worker fills the returned holder at start."""
    app = FixedApp(
        settings.worker.app_id,
        broker=settings.kafka.broker,
        broker_credentials=broker_credentials(settings),
        store=store,
        datadir=settings.worker.data_dir,
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        topic_allow_declare=True,
        web_host=settings.worker.web_host,
        web_bind=settings.worker.web_host,  # listen only on the configured host
        web_port=settings.worker.web_port,
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        **faust_options(settings.worker),
        Worker=QuietWorker,
        autodiscover=False,
        logging_config=logging_config(settings.log),
    )
    holder = RuntimeHolder()
    topic_kinds = {settings.topics.event_topic(kind): kind for kind in EVENT_KINDS}
    topic_kinds[settings.topics.feedback] = "feedback"
    topic_kinds[settings.topics.consent] = "consent"
    topic_kinds[settings.topics.requests] = "privacy"
    codecs = {topic: settings.codecs.for_kind(kind) for topic, kind in topic_kinds.items()}
    inputs = app.topic(*topic_kinds, settings.timers_topic, key_serializer="raw", value_serializer="raw")
    timers_topic = app.topic(settings.timers_topic, key_serializer="raw", value_serializer="raw")
    commands = app.topic(settings.topics.commands, key_serializer="raw", value_serializer="raw")
    deadletter = app.topic(settings.topics.deadletter, key_serializer="raw", value_serializer="raw")
    # bytes keys and values make Faust store and changelog them as raw bytes;
    # agents/state.py and streams/timers.py own the encodings.
    leads = batched_table(app, LEADS_TABLE, default=None, partitions=settings.kafka.partitions,
                          key_type=bytes, value_type=bytes, options={"driver": "rocksdict"})
    index = batched_table(app, TIMERS_TABLE, default=None, partitions=settings.kafka.partitions,
                          key_type=bytes, value_type=bytes, options={"driver": "rocksdict"})
    ledger = batched_table(app, LEDGER_TABLE, default=None, partitions=settings.kafka.partitions,
                           key_type=bytes, value_type=bytes, options={"driver": "rocksdict"})
    erasures_topic = app.topic(settings.erasures_topic, key_serializer="raw", value_serializer="raw")
    receipts = app.topic(settings.topics.receipts, key_serializer="raw", value_serializer="raw")
    outbox = Outbox(app, (leads, index, ledger))
    app.on_before_shutdown.connect(lambda sender, **_: mark_clean_stop(sender))
    input_names = {*topic_kinds, settings.timers_topic}
    app.on_partitions_assigned.connect(
        lambda sender, assigned, **_: log_assignment(assigned, input_names, settings.kafka.partitions))

    async def send_command(key: bytes, value: bytes) -> Any:
        return await outbox.send(commands, key, value)

    async def send_deadletter(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> Any:
        return await outbox.send(deadletter, key, value, headers)

    # Erasure records and receipts commit with the request that caused them.
    async def send_erasure(key: bytes, value: bytes) -> Any:
        return await outbox.send(erasures_topic, key, value)

    async def send_receipt(key: bytes, value: bytes) -> Any:
        return await outbox.send(receipts, key, value)

    # NOTE: _dbs is private to Faust's RocksDB store (faust-streaming 0.11 to 0.15).
    holder.privacy = PrivacyParts(
        vault=None, erasures=ErasureMemory(), ledger=LedgerStore(ledger, lambda: ledger.data._dbs),
        send_erasure=send_erasure, send_receipt=send_receipt, export_dir=Path(settings.privacy.export_dir),
        remaining=(*settings.topics.event_topics(), settings.topics.consent, settings.topics.feedback,
                   settings.topics.commands, settings.topics.deadletter, settings.topics.receipts),
    )
    clock = make_clock(settings.worker.clock_file)
    floors = Floors()
    metrics = Metrics()
    sla = SlaTracker(sla_objectives(settings))
    handler = IngestHandler(
        Inputs(topic_kinds, codecs, settings.timers_topic),
        table=leads,
        # Under exactly-once a batch's rows and commands commit together, so their order does not matter.
        outputs=Outputs(send_command, send_deadletter,
                        flush=None if settings.worker.processing_guarantee == EXACTLY_ONCE else outbox.settle_outputs),
        holder=holder,
        index=index,
        clock=clock,
        privacy=holder.privacy,
        floors=floors,
        metrics=metrics,
        sla=sla,
        rows=RowCache(settings.worker.row_cache_leads),
    )

    batch_size = settings.worker.batch_max_events
    batch_wait_seconds = settings.worker.batch_max_wait_ms / 1000.0

    # A crashed agent stops the worker, so that its supervisor (systemd, Kubernetes)
    # restarts it, instead of a process that looks alive but consumes nothing.
    @app.agent(inputs, name="nurture.ingest", supervisor_strategy=CrashingSupervisor)
    async def ingest(stream: Any) -> None:
        # The erasure memory must be complete before any event, and before the commit gate is taken.
        await holder.privacy.erasures.loaded.wait()
        phases = PhaseClock(metrics)
        async for records in take_batches(stream, batch_size, batch_wait_seconds):
            phases.mark("records")
            # No commit while a batch is in flight: its outputs and the offsets of its
            # records then always commit in the same transaction (streams/faust_fixes.py).
            async with app.commit_gate:
                phases.mark("commit")
                app.batch_in_flight = True
                await handler.handle_batch(records, enter_event)
                phases.mark("handle")
                await outbox.settle()
                phases.mark("settle")
                for record in records:
                    await stream.ack(record)
                app.batch_in_flight = False
                phases.mark("ack")

    @app.task
    async def mark_ready() -> None:
        await watch_readiness(app, metrics.ready)

    @app.task
    async def read_erasures() -> None:
        await tail_erasures(settings, holder.privacy.erasures)

    @app.timer(interval=settings.worker.model_check_seconds)
    async def check_models() -> None:
        loop = asyncio.get_running_loop()
        for slot in holder.slots:
            await loop.run_in_executor(None, slot.check)

    notices = NoticeLog()

    @app.timer(interval=settings.worker.timer_check_ms / 1000.0)
    async def check_timers() -> None:
        if app.in_recovery or app.rebalancing:
            floors.assign(set())  # recovery may write entries below any floor
            return
        changelog = index.changelog_topic.get_topic_name()
        partitions = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}
        floors.assign(partitions)
        count = DueCount()
        # NOTE: _dbs is private to Faust's RocksDB store (faust-streaming 0.11 to 0.15).
        for notice in find_due(index.data._dbs, partitions, clock.now_ms(), notices, floors, count=count):
            await outbox.send_now(timers_topic, notice.lead_id, orjson.dumps({"due": notice.due_ms}),
                                  notice.partition)
            log.debug("timer_due", lead_id=notice.lead_id.decode("utf-8", "replace"), due=notice.due_ms,
                      partition=notice.partition)
        metrics.timers_due.set(count.due)
        metrics.timers_overdue.set(count.overdue)

    counted_reads = {"hit": 0, "miss": 0}

    @app.timer(interval=METRICS_INTERVAL_SECONDS)
    async def sample_metrics() -> None:
        metrics.ready.set(1 if is_ready(app) else 0)
        rows = handler.rows
        for result, total in (("hit", rows.hits), ("miss", rows.misses)):
            metrics.row_cache_reads.labels(result).inc(total - counted_reads[result])
            counted_reads[result] = total
        metrics.row_cache_leads.set(len(rows))
        metrics.recovery_remaining.set(app.tables.recovery.active_remaining_total())
        input_topics = {*topic_kinds, settings.timers_topic}
        for tp in app.consumer.assignment():
            if tp.topic in input_topics:
                committed = app.consumer._committed_offset.get(tp) or 0
                lag = max(app.consumer.highwater(tp) - committed, 0) if app.consumer.highwater(tp) else 0
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    @app.timer(interval=METRICS_INTERVAL_SECONDS)
    async def check_sla() -> None:
        for change in sla.check(clock.now_ms()):
            metrics.sla_breached.labels(change.channel, change.objective).set(1 if change.breached else 0)
            emit = log.warning if change.breached else log.info
            emit("sla_breached" if change.breached else "sla_met_again", channel=change.channel,
                 objective=change.objective, value=round(change.value, 3), target=change.target)

    @app.page(endpoints.SLA)
    async def sla_page(web: Any, request: Any) -> Any:
        return web.json({"objectives": dataclasses.asdict(sla.objectives),
                         "channels": sla.summary(clock.now_ms()),
                         "breached": {channel: sorted(names) for channel, names in sla.breached().items()}})

    @app.page(endpoints.LIVE)
    async def live(web: Any, request: Any) -> Any:
        return web.json({"live": True})

    @app.page(endpoints.READY)
    async def ready(web: Any, request: Any) -> Any:
        ok = is_ready(app) and holder.runtime is not None
        return web.json({"ready": ok}, status=200 if ok else 503)

    @app.page(endpoints.METRICS)
    async def metrics_page(web: Any, request: Any) -> Any:
        # aiohttp rejects a charset in content_type, so the header is set whole.
        return web.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page(endpoints.MODELS)
    async def models_page(web: Any, request: Any) -> Any:
        return web.json(model_status(holder, handler))

    dashboard = register_dashboard(app, settings, handler, leads, metrics)
    requests_topic = app.topic(settings.topics.requests, key_serializer="raw", value_serializer="raw")
    register_admin_api(app, settings, dashboard, holder.privacy, ledger,
                       lambda key, value: outbox.send_now(requests_topic, key, value))
    app.nurture_handler = handler  # type: ignore[attr-defined]
    app.nurture_leads = leads  # type: ignore[attr-defined]
    app.nurture_index = index  # type: ignore[attr-defined]
    app.nurture_metrics = metrics  # type: ignore[attr-defined]
    return app, holder


def sla_objectives(settings: Settings) -> Objectives:
    """Return the delivery objectives of the ``[sla]`` settings."""
    values = dataclasses.asdict(settings.sla)
    return Objectives(**{name: values[name] for name in values if name in Objectives.__dataclass_fields__})


def is_ready(app: Any) -> bool:
    """Return True once the worker has recovered its tables after start.

    It stays ready through later rebalances: every replica of the group goes
    through each one, and a readiness that dropped with them would take all
    replicas out at once and stall rolling updates.
    """
    if not getattr(app, "nurture_recovered", False):
        recovery = app.tables.recovery
        if recovery.completed.is_set() and not app.in_recovery and not app.rebalancing:
            app.nurture_recovered = True
    return bool(getattr(app, "nurture_recovered", False))


def log_assignment(assigned: Iterable[Any], input_topics: set[str], partitions: int) -> None:
    """Log the input partitions this worker processes, or warn when it has none.

    Each input partition goes to one worker of the group, so a worker beyond
    the partition count only keeps standby tables until another one leaves.
    """
    inputs = sorted({tp.partition for tp in assigned if tp.topic in input_topics})
    if inputs:
        worker_log.info("input_partitions_assigned", partitions=inputs)
        return
    worker_log.warning(
        "no_input_partitions", partitions=partitions,
        hint=f"the group has more workers than its input topics have partitions ({partitions}), so this one "
             "stays idle until another worker leaves; add partitions to use it (docs/scaling.md)")


async def watch_readiness(app: Any, gauge: Any, interval_seconds: float = READY_CHECK_SECONDS) -> None:
    """Set ``gauge`` to 1 and log ``worker_ready`` as soon as the worker first becomes ready."""
    started = time.monotonic()
    while not is_ready(app):
        await asyncio.sleep(interval_seconds)
    gauge.set(1)
    worker_log.info("worker_ready", seconds=round(time.monotonic() - started, 1))


def enter_event(record: Any) -> None:
    """Make ``record`` Faust's current event in this task only.

    Faust tables read and write the partition of the current event, so each
    record of a batch is made current before its lead's row is touched. Only the
    context variable that ``faust.streams.current_event()`` reads is set: the
    stream's own ``current_event`` attribute belongs to the task that fills the
    batch buffer, and changing it there makes that task buffer the wrong event.
    """
    # NOTE: _current_event is private to faust.streams (faust-streaming 0.11 to 0.15).
    faust_streams._current_event.set(weakref.ref(record))


def model_status(holder: RuntimeHolder, handler: IngestHandler) -> dict[str, Any]:
    """Describe the models in use and, with a shadow model, how its decisions differ."""
    runtime = holder.runtime
    return {
        "live": runtime.model.version if runtime else None,
        "shadow": runtime.shadow.version if runtime and runtime.shadow else None,
        # events: events scored by both models; the other counts are decisions (rule, template)
        "shadow_decisions": handler.shadow_stats.snapshot(),
        "watched": [{"role": slot.role, "directory": str(slot.directory), "version": slot.model.version,
                     "rejected": slot.rejected}
                    for slot in holder.slots],
    }
