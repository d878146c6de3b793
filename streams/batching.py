"""Batches of stream events, each timed from the arrival of its first event.

Faust's ``Stream.take_events`` stops reading the stream while a batch is
handled, and after the batch starts a new wait of ``within`` seconds. An
event that arrived while a batch was handled therefore waited for that batch
and then for a whole new window, although it had been waiting all along.
``take_batches`` keeps filling the next batch while one is handled, and
yields a batch once it is full or ``within`` seconds after its first event
arrived, at once if that moment has passed. A backlog still gives full batches.
Under a steady load an event waits for its batch at most ``within`` or the
handling of the batch before it, whichever is longer.

Events are acknowledged after the loop body has run for their batch, as with
Faust's ``take_events``. The caller may acknowledge them sooner, as the ingest
agent does under the commit gate, and a second acknowledgement changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from mode.utils.aiter import aiter


class _NextBatch:
    """The events read since the last batch was taken, with the arrival time of the first."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self.events: list[Any] = []
        self.first_arrival = 0.0
        self.started = asyncio.Event()  # set while the batch has at least one event
        self.full = asyncio.Event()
        self.room = asyncio.Event()  # set while the batch has fewer than max_events
        self.room.set()

    def add(self, event: Any) -> None:
        if not self.events:
            self.first_arrival = time.monotonic()
            self.started.set()
        self.events.append(event)
        if len(self.events) >= self.max_events:
            self.full.set()
            self.room.clear()

    def take(self) -> list[Any]:
        events, self.events = self.events, []
        self.started.clear()
        self.full.clear()
        self.room.set()
        return events


def take_batches(stream: Any, max_events: int, within: float) -> AsyncIterator[list[Any]]:
    """Return an iterator over the events of a Faust ``stream`` in batches of at most ``max_events``.

    A batch is yielded when it is full, or ``within`` seconds after its first
    event arrived. Its events are acknowledged when the loop body returns.
    """
    if max_events < 1 or within <= 0:
        raise ValueError(f"a batch needs max_events >= 1 and within > 0 seconds, got {max_events} and {within}")
    return _batches(stream, _NextBatch(max_events), within)


async def _batches(stream: Any, batch: _NextBatch, within: float) -> AsyncIterator[list[Any]]:
    """Read ``stream`` into ``batch`` in a task of its own, and yield each batch when it is due."""

    async def add(value: Any) -> Any:
        while not batch.room.is_set():  # a full batch makes the rest wait in the stream's queue
            await stream.wait(batch.room)
            if stream.should_stop:
                return value
        event = stream.current_event
        if event is None:
            raise RuntimeError("stream value without a current Faust event: "
                               "take_batches needs a stream of a topic or channel")
        batch.add(event)
        return value

    acks_before = stream.enable_acks
    stream.enable_acks = False  # acknowledged once handled, not when read
    stream.add_processor(add)
    # NOTE: _enable_passive and _processors are private to Faust's Stream (checked on faust-streaming 0.15.3).
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            # mode reports a wait that timed out as stopped, so ask the stream itself.
            await stream.wait(batch.started)
            left = batch.first_arrival + within - time.monotonic()
            if left > 0 and not batch.full.is_set():
                await stream.wait(batch.full, timeout=left)
            if stream.should_stop:
                break
            events = batch.take()
            try:
                yield events
            finally:
                for event in events:
                    await stream.ack(event)
    finally:
        stream.enable_acks = acks_before
        stream._processors.remove(add)
