"""Reading one lead's row back from the lead table's changelog topic."""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from nurture.agents.state import decode_lead
from nurture.config.settings import Settings
from nurture.streams.app import LEADS_TABLE

BOOTSTRAP_TIMEOUT_MS = 10_000


def changelog_topic(settings: Settings) -> str:
    """Faust names a table's changelog APP_ID-TABLE-changelog."""
    return f"{settings.worker.app_id}-{LEADS_TABLE}-changelog"


def read_lead(settings: Settings, lead_id: str) -> dict[str, Any] | None:
    """Return the latest stored row of ``lead_id``, or None when the table has none.

    The row sits in the partition its events were produced to. Producers that
    use Kafka's default partitioner pick the partition from murmur2 of the key,
    so that partition is read first and the others only when it has no row.
    """
    topic = changelog_topic(settings)
    key = lead_id.encode("utf-8")
    # A broker that cannot be reached raises after the bootstrap timeout, and the caller
    # reports that once. kafka-python's own line per connection attempt would only repeat it.
    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(max(level, logging.CRITICAL))
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
                                 group_id=None, bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                                 isolation_level="read_committed")  # rows of aborted transactions never happened
    finally:
        kafka_log.setLevel(level)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            return None
        first = (murmur2(key) & 0x7FFFFFFF) % len(partitions)
        for partition in [first, *(p for p in partitions if p != first)]:
            found, payload = _latest_value(consumer, TopicPartition(topic, partition), key)
            if found:
                return None if payload is None else decode_lead(payload, lead_id)
        return None
    finally:
        consumer.close()


def _latest_value(consumer: KafkaConsumer, partition: TopicPartition, key: bytes) -> tuple[bool, bytes | None]:
    """Return (found, value) of the last record with ``key``; a tombstone is (True, None)."""
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    end = consumer.end_offsets([partition])[partition]
    found, value = False, None
    while consumer.position(partition) < end:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                if record.key == key:
                    found, value = True, record.value
    return found, value
