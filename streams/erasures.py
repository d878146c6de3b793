"""Reading the erasure memory topic into every worker, from its start and then as it grows."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from nurture.agents.privacy.erasure import ErasureMemory
from nurture.config.settings import Settings
from nurture.streams.kafka_clients import client_options

log = structlog.get_logger("nurture.erasures")
RETRY_SECONDS = 5.0
ASSIGNMENT_TIMEOUT_SECONDS = 30.0


async def tail_erasures(settings: Settings, memory: ErasureMemory) -> None:
    """Fill ``memory`` from the erasures topic, set ``memory.loaded`` at its end, then follow it.

    The ingest agent waits for ``loaded`` before its first batch, so that no
    event of an erased lead slips through while the memory is still empty.
    """
    topic = settings.erasures_topic
    while True:
        # Without a group, a subscribed consumer gets every partition of the topic.
        # aiokafka takes the same connection options as kafka-python.
        consumer = AIOKafkaConsumer(topic, **client_options(settings), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    client_id=f"{settings.worker.app_id}-erasures")
        try:
            await consumer.start()
            partitions = await _partitions(consumer, memory, topic)
            ends = await consumer.end_offsets(partitions)
            await _read_to(consumer, memory, ends)
            if not memory.loaded.is_set():
                log.info("erasures_loaded", topic=topic, erased_keys=len(memory))
                memory.loaded.set()
            while True:
                await _read_batch(consumer, memory)
        except (KafkaError, OSError) as exc:
            log.warning("erasures_read_retry", topic=topic, error=repr(exc), retry_seconds=RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)
        finally:
            await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, memory: ErasureMemory, topic: str) -> list[TopicPartition]:
    """Wait until the consumer has its partitions; records read meanwhile go to ``memory``."""
    deadline = asyncio.get_running_loop().time() + ASSIGNMENT_TIMEOUT_SECONDS
    while not consumer.assignment():
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaError(f"no partitions of topic {topic} after {ASSIGNMENT_TIMEOUT_SECONDS:g} s; "
                             "does it exist? `nurture topics create` makes it")
        await _read_batch(consumer, memory)
    return sorted(consumer.assignment())


async def _read_to(consumer: AIOKafkaConsumer, memory: ErasureMemory, ends: dict[TopicPartition, int]) -> None:
    while True:
        positions = [await consumer.position(tp) for tp in ends]
        if all(position >= end for position, end in zip(positions, ends.values())):
            return
        await _read_batch(consumer, memory)


async def _read_batch(consumer: AIOKafkaConsumer, memory: ErasureMemory) -> None:
    batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=1000)
    for records in batches.values():
        memory.load((record.key, record.value) for record in records if record.key is not None)
