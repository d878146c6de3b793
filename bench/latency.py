"""Latency from an event's produce time to the command it causes, on a running worker.

``command_latencies`` sends events of fresh leads at a steady rate, each stamped
with its send time (``produced_at`` and ``event_time``), and measures two
latencies per command, both from the stamp of its trigger event:

- written: to the command's broker timestamp, when the broker appended it;
- visible: to the moment a ``read_committed`` consumer that reads all along
  receives it. Under exactly-once a command becomes visible when its
  transaction commits, so this is the delay before a delivery worker can read it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from common import Worker, bench_events, broker, progress

SETTLE_SECONDS = 10.0


def command_latencies(worker: Worker, prefix: str, rate: float, seconds: float) -> dict[str, Any]:
    count = int(rate * seconds)
    events = bench_events(count, int(time.time() * 1000), tag="late")
    topic = worker.env["NURTURE_TOPICS_COMMANDS"]
    sent, arrivals = asyncio.run(_send_and_watch(events, prefix, rate, topic))
    worker.check_alive()
    latencies = sorted(_read_latencies(topic, sent))
    if not latencies:
        raise SystemExit("no command came from the events of the latency run")
    visible = sorted(float(at - sent[trigger]) for trigger, at in arrivals.values() if trigger in sent)
    if len(visible) != len(latencies):
        raise SystemExit(f"the read_committed reader received {len(visible):,} of {len(latencies):,} commands")
    return {"rate": rate, "seconds": seconds, "events": count, "commands": len(latencies),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "max_ms": latencies[-1],
            "visible_p50_ms": percentile(visible, 50), "visible_p99_ms": percentile(visible, 99),
            "visible_max_ms": visible[-1]}


async def _send_and_watch(events: list[tuple[str, dict[str, Any]]], prefix: str, rate: float,
                          topic: str) -> tuple[dict[str, int], dict[str, tuple[str, int]]]:
    """Send the events while a read_committed consumer notes when each command arrives (ms)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=broker(), group_id=None, isolation_level="read_committed",
                                enable_auto_commit=False)
    await consumer.start()
    arrivals: dict[str, tuple[str, int]] = {}  # command id -> (trigger event id, arrival in ms)
    try:
        partitions = [TopicPartition(topic, p) for p in _partitions_of(topic)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)  # resolve the end before the first event is sent
        watching = asyncio.create_task(_watch(consumer, arrivals))
        sent = await _send_paced(events, prefix, rate)
        await asyncio.sleep(SETTLE_SECONDS)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    finally:
        await consumer.stop()
    return sent, arrivals


def _partitions_of(topic: str) -> list[int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=broker())
    try:
        return sorted(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


async def _watch(consumer: Any, arrivals: dict[str, tuple[str, int]]) -> None:
    while True:
        batches = await consumer.getmany(timeout_ms=50)
        arrived = time.time_ns() // 1_000_000
        for records in batches.values():
            for record in records:
                command = orjson.loads(record.value)
                if command.get("trigger_event_id"):
                    arrivals.setdefault(command["command_id"], (command["trigger_event_id"], arrived))


async def _send_paced(events: list[tuple[str, dict[str, Any]]], prefix: str, rate: float) -> dict[str, int]:
    """Send the events at ``rate`` per second; return each event id's send time (ms)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=broker(), acks="all", linger_ms=2)
    await producer.start()
    sent: dict[str, int] = {}
    started = time.monotonic()
    try:
        for number, (kind, record) in enumerate(events):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ms = time.time_ns() // 1_000_000
            record["event_time"] = record["produced_at"] = now_ms
            sent[record["event_id"]] = now_ms
            await producer.send(f"{prefix}.{kind}", value=orjson.dumps(record), key=record["lead_id"].encode())
            if number and number % 10_000 == 0:
                progress("latency", f"sent {number:,} of {len(events):,}")
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _read_latencies(topic: str, sent: dict[str, int]) -> list[float]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=broker(), auto_offset_reset="earliest", group_id=None,
                             consumer_timeout_ms=5000)
    try:
        return [float(record.timestamp - sent[trigger]) for record in consumer
                if (trigger := orjson.loads(record.value).get("trigger_event_id")) in sent]
    finally:
        consumer.close()


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
