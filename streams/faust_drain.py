"""Handing fetched records to the streams without four tasks per record.

Faust's consumer passes each fetched record to the conductor inside
``Service.wait_first``, so that a hand-off stuck on a full stream queue gives up
when a rebalance stops the flow. That starts four tasks per record (the
hand-off and waits for the flow stop, the consumer's stop and its crash) and
cancels three of them. With no work per event and a stream buffer of 32,768
records, a Faust agent read about 10,000 events/s on two cores this way and
about 19,000 with the plain await below (docs/benchmarks.md).

The hand-off can only block when the flow is stopped or suspended, when the
conductor is rebuilding its callbacks, when Faust's producer buffer is over its
limit, or when a stream queue of the record's partition is full.
``can_hand_off_at_once`` checks these before each record. When none holds, the
record is handed off by a plain await, which then runs to its end without
waiting. Otherwise it goes through ``wait_first`` as in Faust. Everything else
follows Faust's drain loop: the read offsets, the gaps between them that
acknowledgement fills, and the periodic yield to the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from faust.transport.consumer import CONSUMER_FETCHING

log = structlog.get_logger("nurture.consumer")
YIELD_EVERY = 100  # records handed off between two yields to the event loop, as in Faust


def can_hand_off_at_once(consumer: Any, tp: Any) -> bool:
    """Return True when the conductor can take a record of ``tp`` at once, without waiting for anything."""
    app = consumer.app
    if consumer.suspend_flow.is_set() or not app.flow_control.is_active():
        return False
    conductor = app.topics
    # NOTE: _tp_to_callback_lock and _tp_index are private to Faust's Conductor (faust-streaming 0.11 to 0.15).
    if conductor._tp_to_callback_lock.locked():
        return False
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:
        return False
    return not any(channel.queue.full() for channel in conductor._tp_index.get(tp, ()))


async def drain(consumer: Any, fetcher: Any) -> None:
    """Fetch records and hand them to the conductor until the consumer or the fetcher stops."""
    # NOTE: _read_offset, _add_gap, _commit_every and _n_acked are private to Faust's Consumer
    # (faust-streaming 0.11 to 0.15). ``drain`` reads and updates them as Faust's own loop does.
    read_offsets = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    since_yield = 0
    try:
        while not (consumer._stopped.is_set() or fetcher._stopped.is_set()):
            consumer.diag.set_flag(CONSUMER_FETCHING)
            records = consumer.getmany(timeout=1.0)
            await asyncio.sleep(0)
            if consumer.should_stop:
                break
            async for tp, message in records:
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    await asyncio.sleep(0)
                    since_yield = 0
                last = read_offsets[tp]
                if last is not None and message.offset < last:
                    continue  # already read, and Faust drops such records too
                if last and message.offset - last > 1 and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, last + 1, message.offset)
                await _maybe_commit(consumer)
                if can_hand_off_at_once(consumer, tp):
                    await consumer.callback(message)
                else:
                    await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
                read_offsets[tp] = message.offset
            consumer.diag.unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if not consumer.transport.app.should_stop:
            raise
        log.info("consumer_stopped", reason="broker")
    except asyncio.CancelledError:
        if not consumer.transport.app.should_stop:
            raise
        log.info("consumer_stopped", reason="cancelled")
    finally:
        consumer.diag.unset_flag(CONSUMER_FETCHING)


async def _maybe_commit(consumer: Any) -> None:
    """Commit every ``broker_commit_every`` acknowledged records, when that setting is on."""
    every = consumer._commit_every
    if every is not None and consumer._n_acked >= every:
        consumer._n_acked = 0
        await consumer.commit()
