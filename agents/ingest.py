"""The ingest agent: decode events, update lead rows, score in batches, publish commands.

The agent takes records in batches from the event topics, the feedback topic
and the timers topic. It decodes every record and folds each valid event into
its lead's features on the event loop, because table reads need Faust's
per-event context. Feedback and timer notices load their lead's row there too.
Then it scores the batch's events with one model call and applies the rules and
journeys in a worker thread, so the event loop stays free while a batch is
scored. Feedback is applied and timer notices fire the leads'
due waits in the same thread. Last, it writes each changed lead row and its
timer index entry once and publishes the commands.

Bad input never stops the agent: an undecodable or invalid record, and a valid
one whose processing fails, goes to the dead-letter topic with its reason and
origin, and the agent moves on to the next record.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Sequence

import structlog

import orjson

from nurture.agents.journeys.engine import next_due
from nurture.agents.pipeline import (Outcome, Prepared, Runtime, decide, prepare, process_consent, process_due,
                                     process_feedback)
from nurture.agents.privacy.ledger import entry_content
from nurture.agents.privacy.requests import PrivacyDesk, PrivacyParts
from nurture.agents.row_cache import RowCache
from nurture.agents.shadow import ShadowStats
from nurture.agents.sla import Objectives, SlaTracker
from nurture.agents.state import decode_lead, encode_lead
from nurture.schemas.records import Event
from nurture.streams.codecs import DecodeError, decode_event, encode_command
from nurture.streams.metrics import Metrics
from nurture.streams.timers import index_key

log = structlog.get_logger("nurture.ingest")
LEDGER_REFERENCES = 200  # ledger entries a lead row points to; `nurture consent history` finds all

Send = Callable[..., Awaitable[Any]]


@dataclass
class RuntimeHolder:
    """The runtime the worker loaded at start and the model directories it watches."""

    runtime: Runtime | None = None
    slots: list[Any] = field(default_factory=list)  # scoring.rollout.ModelSlot
    privacy: PrivacyParts | None = None  # the key ring is loaded into it at worker start


@dataclass(frozen=True)
class Outputs:
    """Output callables: ``send_command(key, value)`` and ``send_deadletter(key, value, headers)``.

    ``flush()``, where given, waits until the broker has every output sent so
    far. Under at-least-once the handler calls it before it writes any lead
    row: a row that records an event must never be stored while the commands
    of that event can still be lost, because the event is then known as seen
    and nothing publishes them again.
    """

    send_command: Send
    send_deadletter: Send
    flush: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Inputs:
    """The agent's input topics: kind per topic and codec per topic.

    Kinds are the event kinds, "feedback" (delivery outcomes), "consent" and
    "privacy" (erasure and export requests).
    """

    kinds: Mapping[str, str]
    codecs: Mapping[str, str]
    timers_topic: str


@dataclass
class _Pending:
    """Work for the scoring thread: an event to score, feedback, or a lead whose timer notice came."""

    kind: str  # "event", "feedback", "consent" or "notice"
    record: Any  # the Faust event, whose context table writes need
    event: Event | None  # the event or the feedback; None for a notice
    key: bytes
    lead: dict[str, Any]
    prepared: Prepared | None = None
    outcome: Outcome | None = None
    error: str | None = None

    @property
    def lead_id(self) -> str:
        return str(self.lead["lead_id"])


@dataclass
class _Batch:
    pending: list[_Pending] = field(default_factory=list)
    leads: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    last_record: dict[bytes, Any] = field(default_factory=dict)


class IngestHandler:
    """Per-batch logic of the ingest agent, independent of how records arrive."""

    def __init__(self, inputs: Inputs, table: Any, outputs: Outputs, holder: RuntimeHolder,
                 index: Any, clock: Any, privacy: PrivacyParts, floors: Any = None,
                 metrics: Metrics | None = None, sla: SlaTracker | None = None, worker_id: str = "",
                 rows: RowCache | None = None) -> None:
        self.kinds = dict(inputs.kinds)
        self.codecs = dict(inputs.codecs)
        self.timers_topic = inputs.timers_topic
        self.table = table
        self.index = index  # the timer index table (streams/timers.py)
        self.clock = clock
        self.floors = floors  # streams.timers.Floors of the timer check; new entries lower them
        self.metrics = metrics or Metrics()
        self.sla = sla or SlaTracker(Objectives())
        self.outputs = outputs
        self.holder = holder
        self.privacy = privacy
        self.desk = PrivacyDesk(privacy, table, self._delete_index_entry, worker_id)
        self.rows = rows if rows is not None else RowCache(0)  # decoded rows of recently written leads
        self.shadow_stats = ShadowStats()
        self.records_handled = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nurture-score")

    @property
    def vault(self) -> Any:
        return self.privacy.vault

    async def handle_batch(self, records: Sequence[Any], enter: Callable[[Any], None]) -> None:
        """Process a batch of Faust events; ``enter(record)`` makes ``record`` Faust's current event.

        A privacy request splits the batch: what came before it is stored first,
        and what comes after it sees the lead erased.
        """
        runtime = self.holder.runtime
        if runtime is None:
            raise RuntimeError("the worker runtime (model, rules and journeys) is not loaded")
        await self.privacy.erasures.loaded.wait()
        start = 0
        for position, record in enumerate(records):
            if self.kinds.get(record.message.topic) == "privacy":
                if start < position:
                    await self._handle(records[start:position], runtime, enter)
                await self._request(record, enter)
                start = position + 1
        if start < len(records):
            await self._handle(records[start:], runtime, enter)
        self.records_handled += len(records)

    async def _request(self, record: Any, enter: Callable[[Any], None]) -> None:
        enter(record)
        self.metrics.records_in.labels(record.message.topic).inc()
        request = await self._decode(record)
        if request is not None:
            self.rows.forget(record.message.key)  # an erased lead's personal data must not stay in memory
            await self.desk.handle(request, record.message.key, self.clock.now_ms())

    async def _handle(self, records: Sequence[Any], runtime: Runtime, enter: Callable[[Any], None]) -> None:
        batch = _Batch()
        decoded, notices = [], []
        for record in records:
            enter(record)
            self.metrics.records_in.labels(record.message.topic).inc()
            if record.message.topic == self.timers_topic:
                notices.append(record)
                continue
            event = await self._decode(record)
            if event is not None and not self._erased(event):
                decoded.append((record, event))
        # Kafka orders records within a topic partition only, so a lead's click, open and
        # form events can arrive out of time order. Within a batch they are put back in it.
        # NOTE: nothing aligns the topics across batches. In a backlog the small form topic
        # runs ahead of the click topic, so score crossings can differ from a time-ordered run.
        decoded.sort(key=lambda pair: pair[1].event_time)
        for record, event in decoded:
            enter(record)
            if event.kind == "feedback":
                await self._feedback(record, event, batch)
            elif event.kind == "consent":
                self._consent(record, event, batch)
            else:
                await self._prepare(record, event, runtime, batch)
        for record in notices:
            enter(record)
            await self._notice(record, batch)
        if batch.leads:
            await self._score_and_store(batch, runtime, enter)

    def _erased(self, event: Event) -> bool:
        """True for an event of an erased lead from before its erasure, as a replay brings back."""
        erased_at = self.privacy.erasures.lead_erased_at(event.lead_id)
        if erased_at is None or event.event_time > erased_at:
            return False
        self.metrics.records_skipped.labels("erased_lead").inc()
        return True

    def _consent(self, record: Any, change: Event, batch: _Batch) -> None:
        """Queue a consent change; it creates the lead's row when the lead is new."""
        key = record.message.key
        lead = self._lead(key, change.lead_id, batch)
        batch.leads[key] = lead
        batch.last_record[key] = record
        batch.pending.append(_Pending("consent", record, change, key, lead))

    async def _score_and_store(self, batch: _Batch, runtime: Runtime, enter: Callable[[Any], None]) -> None:
        loop = asyncio.get_running_loop()
        now_ms = self.clock.now_ms()
        started = time.perf_counter()
        await loop.run_in_executor(self._executor, _score_and_decide, batch.pending, runtime, now_ms)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_records.observe(sum(1 for item in batch.pending if item.kind == "event"))

        for item in batch.pending:
            if item.error is not None:
                enter(item.record)
                await self._dead_letter(item.record.message, "processing_failed", item.error)
        if self.outputs.flush is not None:
            # At-least-once: no row may count an event as seen before its commands are safe.
            await self._publish(batch.pending, enter)
            await self.outputs.flush()
        self._append_ledger(batch.pending, now_ms, enter)
        for key, lead in batch.leads.items():
            record = batch.last_record[key]
            enter(record)
            self._update_index(key, lead, record.message.partition)
            stored = encode_lead(lead, self.vault)
            self.table[key] = stored
            self.rows.put(key, stored, lead)
        if self.outputs.flush is None:
            await self._publish(batch.pending, enter)

    def _append_ledger(self, pending: list[_Pending], now_ms: int, enter: Callable[[Any], None]) -> None:
        """Append every consent change of the batch to its partition's ledger, in batch order."""
        for item in pending:
            if item.outcome is None or not item.outcome.consents:
                continue
            enter(item.record)
            partition = item.record.message.partition
            subject = self.privacy.erasures.key("lead", item.lead_id)
            for change, applied in item.outcome.consents:
                entry = self.privacy.ledger.append(partition, entry_content(subject, change, applied, now_ms))
                item.lead["ledger"].append([partition, entry["seq"]])
                del item.lead["ledger"][:-LEDGER_REFERENCES]
                log.info("consent_recorded", lead_id=item.lead_id, channel=change.attrs["channel"],
                         purpose=change.attrs["purpose"], granted=change.attrs["granted"], applied=applied,
                         ledger_partition=partition, ledger_seq=entry["seq"])

    def _update_index(self, key: bytes, lead: dict[str, Any], partition: int) -> None:
        """Keep the lead's one timer index entry at its earliest due time."""
        due = next_due(lead)
        if due == lead["due"]:
            return
        if lead["due"] is not None:
            self._delete_index_entry(lead["due"], key)
        if due is not None:
            entry = index_key(due, key)
            self.index[entry] = b"1"
            if self.floors is not None:
                self.floors.lower(partition, entry)
        lead["due"] = due

    async def _feedback(self, record: Any, feedback: Event, batch: _Batch) -> None:
        key = record.message.key
        if key not in batch.leads:
            lead = self._load(key, feedback.lead_id)
            if lead is None:
                # Feedback never creates a lead: the lead may have been erased since.
                log.warning("feedback_for_unknown_lead", lead_id=feedback.lead_id,
                            command_id=feedback.attrs["command_id"], status=feedback.attrs["status"])
                return
            batch.leads[key] = lead
        batch.last_record[key] = record
        batch.pending.append(_Pending("feedback", record, feedback, key, batch.leads[key]))

    async def _notice(self, record: Any, batch: _Batch) -> None:
        """Queue a lead whose timer index entry came due; a stale entry is removed."""
        message = record.message
        try:
            due = int(orjson.loads(message.value)["due"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            await self._dead_letter(message, "timer_notice_invalid", f"{type(exc).__name__}: {exc}")
            return
        key = message.key
        lead = batch.leads.get(key) or self._load(key, key.decode("utf-8"))
        if lead is None:
            # The lead is gone (erased, say); its index entry must not fire again.
            self._delete_index_entry(due, key)
            return
        if lead["due"] != due:
            self._delete_index_entry(due, key)
        batch.leads[key] = lead
        batch.last_record[key] = record
        if not any(item.kind == "notice" and item.key == key for item in batch.pending):
            batch.pending.append(_Pending("notice", record, None, key, lead))

    def _delete_index_entry(self, due: int, key: bytes) -> None:
        entry = index_key(due, key)
        if self.index.get(entry) is not None:
            del self.index[entry]

    def _lead(self, key: bytes, lead_id: str, batch: _Batch) -> dict[str, Any]:
        """Return the lead's row in this batch, its stored row, or a new row."""
        return batch.leads.get(key) or self._load(key, lead_id) or decode_lead(None, lead_id, self.vault)

    def _load(self, key: bytes, lead_id: str) -> dict[str, Any] | None:
        """Return the lead's stored row, from the row cache while it is current, or None."""
        stored = self.table.get(key)
        if stored is None:
            self.rows.forget(key)
            return None
        return self.rows.take(key, stored) or decode_lead(stored, lead_id, self.vault)

    async def _decode(self, record: Any) -> Event | None:
        """Return the record's event, or None after sending the record to the dead letters."""
        message = record.message
        if message.key is None:
            await self._dead_letter(message, "missing_key", "record has no key; key events by lead_id")
            return None
        try:
            # Events may run one day ahead of the worker clock, or of the system clock when
            # a clock file holds an earlier time.
            now_ms = max(self.clock.now_ms(), time.time_ns() // 1_000_000)
            return decode_event(self.kinds[message.topic], self.codecs[message.topic],
                                message.value, message.key, now_ms)
        except DecodeError as exc:
            await self._dead_letter(message, exc.reason, str(exc))
            return None

    async def _prepare(self, record: Any, event: Event, runtime: Runtime, batch: _Batch) -> None:
        message = record.message
        key = message.key
        try:
            lead = self._lead(key, event.lead_id, batch)
            prepared = prepare(lead, event, runtime.recent_event_ids)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
            self._log_failure(message, event, exc)
            await self._dead_letter(message, "processing_failed", f"{type(exc).__name__}: {exc}")
            return
        batch.leads[key] = lead
        batch.last_record[key] = record
        if prepared is None:
            log.debug("event_duplicate_skipped", event_id=event.event_id, lead_id=event.lead_id)
            return
        batch.pending.append(_Pending("event", record, event, key, lead, prepared))

    async def _publish(self, pending: list[_Pending], enter: Callable[[Any], None]) -> None:
        for item in pending:
            outcome = item.outcome
            if outcome is None:
                continue
            enter(item.record)  # an exactly-once send joins the transaction of the record's partition
            self._log_outcome(item.lead_id, outcome)
            if outcome.shadow_sends is not None:
                self.shadow_stats.add(outcome.live_sends, outcome.shadow_sends)
            for command in outcome.commands:
                await self.outputs.send_command(item.key, encode_command(command))
                self.metrics.commands_out.labels(command["action"], command["channel"]).inc()
                if item.kind == "event":
                    latency = time.time() - item.event.produced_at / 1000
                    self.metrics.event_to_command_seconds.observe(max(latency, 0.0))
                log.info("command_published", command_id=command["command_id"],
                         lead_id=item.lead_id, rule=command["rule"], action=command["action"],
                         template=command["template"], score=command["score"],
                         model_version=command["model_version"])

    def _log_outcome(self, lead_id: str, outcome: Outcome) -> None:
        for rule, reason in outcome.held_back:
            log.debug("command_held", lead_id=lead_id, rule=rule, reason=reason)
        for rule, reason in outcome.dropped:
            log.info("command_dropped", lead_id=lead_id, rule=rule, reason=reason)
            self.metrics.commands_dropped.labels(reason.split(":")[0]).inc()
        for rule, reason, due in outcome.deferred:
            log.info("command_deferred", lead_id=lead_id, rule=rule, reason=reason, due=due)
            self.metrics.commands_deferred.labels(reason).inc()
        for journey, what, detail in outcome.journey_log:
            # A lead that may not enter again meets its trigger often; that is routine.
            emit = log.debug if what == "entry_skipped" else log.info
            emit(f"journey_{what}", lead_id=lead_id, journey=journey, detail=detail)
        if outcome.blocked is not None:
            log.info("channel_blocked", lead_id=lead_id, reason="hard_bounce")
        delivery = outcome.delivery
        if delivery is not None:
            self.sla.observe(delivery.channel, delivery.status, delivery.at_ms, delivery.latency_ms,
                             delivery.command_id)
            self.metrics.delivery_outcomes.labels(delivery.channel, delivery.status).inc()
            if delivery.latency_ms is not None:
                self.metrics.delivery_seconds.labels(delivery.channel, delivery.status).observe(
                    max(delivery.latency_ms, 0) / 1000)

    def _log_failure(self, message: Any, event: Event, exc: Exception) -> None:
        log.error("event_processing_failed", topic=message.topic, partition=message.partition,
                  offset=message.offset, event_id=event.event_id, lead_id=event.lead_id,
                  error=repr(exc), traceback=traceback.format_exc())

    async def _dead_letter(self, message: Any, reason: str, detail: str) -> None:
        headers = {
            "nurture.reason": reason,
            "nurture.error": detail[:1000],
            "nurture.source.topic": message.topic,
            "nurture.source.partition": str(message.partition),
            "nurture.source.offset": str(message.offset),
            "nurture.failed_at": str(time.time_ns() // 1_000_000),
        }
        await self.outputs.send_deadletter(
            message.key, message.value or b"",
            [(name, value.encode("utf-8")) for name, value in headers.items()],
        )
        self.metrics.dead_letters.labels(reason).inc()
        # The detail can quote field values, so it goes only to the dead-letter
        # record, which contains the original bytes anyway, and never to the log.
        log.warning("event_dead_lettered", reason=reason, topic=message.topic,
                    partition=message.partition, offset=message.offset)


def _score_and_decide(pending: list[_Pending], runtime: Runtime, now_ms: int) -> None:
    """Score all event rows with one model call, then apply rules and journeys per item in order.

    Runs in the scoring thread. Only this agent touches the batch's lead rows, and
    the event loop waits for this call before it reads them again. ``now_ms`` is
    the worker clock's time: notices fire what is due then, and commands are stamped with it.
    """
    events = [item for item in pending if item.prepared is not None]
    rows = [item.prepared.row for item in events]
    scores = runtime.model.score(rows) if rows else []
    shadow_scores = runtime.shadow.score(rows) if runtime.shadow is not None and rows else [None] * len(rows)
    scored = {id(item): (score, shadow) for item, score, shadow in zip(events, scores, shadow_scores)}
    for item in pending:
        try:
            if item.kind == "notice":
                item.outcome = process_due(item.lead, now_ms, runtime, now_ms)
            elif item.kind == "feedback":
                item.outcome = process_feedback(item.lead, item.event, runtime, now_ms)
            elif item.kind == "consent":
                item.outcome = process_consent(item.lead, item.event, runtime, now_ms)
            else:
                score, shadow = scored[id(item)]
                item.outcome = decide(item.lead, item.event, item.prepared, score, runtime, now_ms,
                                      shadow_scored=shadow)
        except Exception as exc:  # noqa: BLE001 - reported as a dead letter by the caller
            log.error("event_processing_failed", kind=item.kind,
                      event_id=item.event.event_id if item.event else None,
                      lead_id=item.lead_id, error=repr(exc), traceback=traceback.format_exc())
            item.error = f"{type(exc).__name__}: {exc}"
