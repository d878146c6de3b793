"""The ingest agent: decode events, update lead rows, score in batches, publish commands.

The agent takes events in batches. It decodes every record and folds each valid
event into its lead's features on the event loop, because table reads need Faust's
per-event context. Then it scores the whole batch with one model call and applies
the rules in a worker thread, so a slow batch never blocks the loop. Last, it
writes each changed lead row once and publishes the commands.

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

from nurture.agents.pipeline import Outcome, Prepared, Runtime, decide, prepare
from nurture.agents.shadow import ShadowStats
from nurture.agents.state import decode_lead, encode_lead
from nurture.schemas.records import Event
from nurture.streams.codecs import DecodeError, decode_event, encode_command

log = structlog.get_logger("nurture.ingest")

Send = Callable[..., Awaitable[Any]]


@dataclass
class RuntimeHolder:
    """The runtime the worker loaded at start and the model directories it watches."""

    runtime: Runtime | None = None
    slots: list[Any] = field(default_factory=list)  # scoring.rollout.ModelSlot


@dataclass(frozen=True)
class Outputs:
    """Output callables: ``send_command(key, value)`` and ``send_deadletter(key, value, headers)``."""

    send_command: Send
    send_deadletter: Send


@dataclass
class _Pending:
    """A valid event waiting for its score."""

    record: Any  # the Faust event, whose context table writes need
    event: Event
    key: bytes
    lead: dict[str, Any]
    prepared: Prepared
    outcome: Outcome | None = None
    error: str | None = None


@dataclass
class _Batch:
    pending: list[_Pending] = field(default_factory=list)
    leads: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    last_record: dict[bytes, Any] = field(default_factory=dict)


class IngestHandler:
    """Per-batch logic of the ingest agent, independent of how records arrive."""

    def __init__(self, kinds: Mapping[str, str], codecs: Mapping[str, str], table: Any,
                 outputs: Outputs, holder: RuntimeHolder) -> None:
        self.kinds = dict(kinds)  # topic name -> event kind
        self.codecs = dict(codecs)  # topic name -> codec
        self.table = table
        self.outputs = outputs
        self.holder = holder
        self.shadow_stats = ShadowStats()
        self.records_handled = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nurture-score")

    async def handle_batch(self, records: Sequence[Any], enter: Callable[[Any], None]) -> None:
        """Process a batch of Faust events; ``enter(record)`` makes ``record`` Faust's current event."""
        runtime = self.holder.runtime
        if runtime is None:
            raise RuntimeError("the worker runtime (model and rules) is not loaded")
        batch = _Batch()
        decoded = []
        for record in records:
            enter(record)
            event = await self._decode(record)
            if event is not None:
                decoded.append((record, event))
        # Kafka orders records within a topic partition only, so a lead's click, open and
        # form events can arrive out of time order. Within a batch they are put back in it.
        # NOTE: nothing aligns the topics across batches. In a backlog the small form topic
        # runs ahead of the click topic, so score crossings can differ from a time-ordered run.
        decoded.sort(key=lambda pair: pair[1].event_time)
        for record, event in decoded:
            enter(record)
            await self._prepare(record, event, runtime, batch)
        if batch.pending:
            await self._score_and_store(batch, runtime, enter)
        self.records_handled += len(records)

    async def _score_and_store(self, batch: _Batch, runtime: Runtime, enter: Callable[[Any], None]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _score_and_decide, batch.pending, runtime)

        for item in batch.pending:
            if item.error is not None:
                enter(item.record)
                await self._dead_letter(item.record.message, "processing_failed", item.error)
        for key, lead in batch.leads.items():
            enter(batch.last_record[key])
            self.table[key] = encode_lead(lead)
        await self._publish(batch.pending)

    async def _decode(self, record: Any) -> Event | None:
        """Return the record's event, or None after sending the record to the dead letters."""
        message = record.message
        if message.key is None:
            await self._dead_letter(message, "missing_key", "record has no key; key events by lead_id")
            return None
        try:
            return decode_event(self.kinds[message.topic], self.codecs[message.topic],
                                message.value, message.key)
        except DecodeError as exc:
            await self._dead_letter(message, exc.reason, str(exc))
            return None

    async def _prepare(self, record: Any, event: Event, runtime: Runtime, batch: _Batch) -> None:
        message = record.message
        key = message.key
        try:
            lead = batch.leads.get(key) or decode_lead(self.table.get(key), event.lead_id)
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
        batch.pending.append(_Pending(record, event, key, lead, prepared))

    async def _publish(self, pending: list[_Pending]) -> None:
        for item in pending:
            outcome = item.outcome
            if outcome is None:
                continue
            for rule, reason in outcome.held_back:
                log.debug("command_held", lead_id=item.event.lead_id, rule=rule, reason=reason)
            if outcome.shadow_sends is not None:
                self.shadow_stats.add(outcome.live_sends, outcome.shadow_sends)
            for command in outcome.commands:
                await self.outputs.send_command(item.key, encode_command(command))
                log.info("command_published", command_id=command["command_id"],
                         lead_id=item.event.lead_id, rule=command["rule"], action=command["action"],
                         template=command["template"], score=command["score"],
                         model_version=command["model_version"])

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
        # The detail can quote field values, so it goes only to the dead-letter
        # record, which contains the original bytes anyway, and never to the log.
        log.warning("event_dead_lettered", reason=reason, topic=message.topic,
                    partition=message.partition, offset=message.offset)


def _score_and_decide(pending: list[_Pending], runtime: Runtime) -> None:
    """Score all rows with one model call, then apply the rules per event in order.

    Runs in the scoring thread. Only this agent touches the batch's lead rows, and
    the event loop waits for this call before it reads them again.
    """
    rows = [item.prepared.row for item in pending]
    scores = runtime.model.score(rows)
    shadow_scores = runtime.shadow.score(rows) if runtime.shadow is not None else [None] * len(rows)
    for item, scored, shadow in zip(pending, scores, shadow_scores):
        try:
            item.outcome = decide(item.lead, item.event, item.prepared, scored, runtime,
                                  shadow_scored=shadow)
        except Exception as exc:  # noqa: BLE001 - reported as a dead letter by the caller
            log.error("event_processing_failed", event_id=item.event.event_id,
                      lead_id=item.event.lead_id, error=repr(exc), traceback=traceback.format_exc())
            item.error = f"{type(exc).__name__}: {exc}"
