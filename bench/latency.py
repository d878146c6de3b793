"""Latency from an event's produce time to the command it causes, on a running worker.

``command_latencies`` sends events of fresh leads at a steady rate, each stamped
with its send time (``produced_at`` and ``event_time``), then reads the worker's
commands topic. A command's latency runs from the stamp of its trigger event to
the command's broker timestamp.
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
    sent = asyncio.run(_send_paced(events, prefix, rate))
    time.sleep(SETTLE_SECONDS)
    worker.check_alive()
    latencies = sorted(_read_latencies(worker.env["NURTURE_TOPICS_COMMANDS"], sent))
    if not latencies:
        raise SystemExit("no command came from the events of the latency run")
    return {"rate": rate, "seconds": seconds, "events": count, "commands": len(latencies),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "max_ms": latencies[-1]}


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
