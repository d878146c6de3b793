"""The ingest agent: decode each event, update the lead's row, publish commands.

Bad input never stops the agent: an undecodable or invalid record, and a valid
one whose processing fails, goes to the dead-letter topic with its reason and
origin, and the agent moves on to the next record.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

import structlog

from nurture.agents.pipeline import Runtime, process_event
from nurture.agents.state import decode_lead, encode_lead
from nurture.streams.codecs import DecodeError, decode_event, encode_command

log = structlog.get_logger("nurture.ingest")

Send = Callable[..., Awaitable[Any]]


@dataclass
class RuntimeHolder:
    """The runtime the worker loaded at start; the agent reads it per event."""

    runtime: Runtime | None = None


@dataclass(frozen=True)
class Outputs:
    """Output callables: ``send_command(key, value)`` and ``send_deadletter(key, value, headers)``."""

    send_command: Send
    send_deadletter: Send


class IngestHandler:
    """Per-record logic of the ingest agent, independent of how records arrive."""

    def __init__(self, kinds: Mapping[str, str], codecs: Mapping[str, str], table: Any,
                 outputs: Outputs, holder: RuntimeHolder) -> None:
        self.kinds = dict(kinds)  # topic name -> event kind
        self.codecs = dict(codecs)  # topic name -> codec
        self.table = table
        self.outputs = outputs
        self.holder = holder

    async def handle(self, message: Any) -> None:
        topic = message.topic
        if message.key is None:
            await self._dead_letter(message, "missing_key", "record has no key; key events by lead_id")
            return
        try:
            event = decode_event(self.kinds[topic], self.codecs[topic], message.value, message.key)
        except DecodeError as exc:
            await self._dead_letter(message, exc.reason, str(exc))
            return

        runtime = self.holder.runtime
        if runtime is None:
            raise RuntimeError("the worker runtime (model and rules) is not loaded")
        key = message.key
        try:
            lead = decode_lead(self.table.get(key), event.lead_id)
            outcome = process_event(lead, event, runtime)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the stream
            log.error("event_processing_failed", topic=topic, partition=message.partition,
                      offset=message.offset, event_id=event.event_id, lead_id=event.lead_id,
                      error=repr(exc), traceback=traceback.format_exc())
            await self._dead_letter(message, "processing_failed", f"{type(exc).__name__}: {exc}")
            return

        if outcome.duplicate:
            log.debug("event_duplicate_skipped", event_id=event.event_id, lead_id=event.lead_id)
            return
        self.table[key] = encode_lead(lead)
        for rule, reason in outcome.held_back:
            log.debug("command_held", lead_id=event.lead_id, rule=rule, reason=reason)
        for command in outcome.commands:
            await self.outputs.send_command(key, encode_command(command))
            log.info("command_published", command_id=command["command_id"], lead_id=event.lead_id,
                     rule=command["rule"], action=command["action"], template=command["template"],
                     score=command["score"], model_version=command["model_version"])

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
