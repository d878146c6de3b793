"""Reading the erasure memory topic into every worker, from its start and then as it grows."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from nurture.agents.privacy.erasure import ErasureMemory
from nurture.config.settings import Settings

log = structlog.get_logger("nurture.erasures")
RETRY_SECONDS = 5.0


async def tail_erasures(settings: Settings, memory: ErasureMemory) -> None:
    """Fill ``memory`` from the erasures topic, set ``memory.loaded`` at its end, then follow it.

    The ingest agent waits for ``loaded`` before its first batch, so that no
    event of an erased lead slips through while the memory is still empty.
    """
    topic = settings.erasures_topic
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, client_id=f"{settings.worker.app_id}-erasures")
        try:
            await consumer.start()
            partitions = await _partitions(consumer, topic)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
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


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    await consumer.topics()  # refreshes the metadata
    numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        raise KafkaError(f"topic {topic} does not exist; run `nurture topics create`")
    return [TopicPartition(topic, number) for number in sorted(numbers)]


async def _read_to(consumer: AIOKafkaConsumer, memory: ErasureMemory, ends: dict[TopicPartition, int]) -> None:
    while any(await consumer.position(tp) < end for tp, end in ends.items()):
        await _read_batch(consumer, memory)


async def _read_batch(consumer: AIOKafkaConsumer, memory: ErasureMemory) -> None:
    batches: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=1000)
    for records in batches.values():
        memory.load((record.key, record.value) for record in records if record.key is not None)
