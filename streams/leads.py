"""Reading one lead's row back from the lead table's changelog topic."""

from __future__ import annotations

from typing import Any, Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from nurture.agents.privacy.vault import Vault
from nurture.agents.state import decode_lead
from nurture.config.settings import Settings
from nurture.streams.app import LEADS_TABLE
from nurture.streams.kafka_clients import connect

BOOTSTRAP_TIMEOUT_MS = 10_000


def changelog_topic(settings: Settings) -> str:
    """Faust names a table's changelog APP_ID-TABLE-changelog."""
    return f"{settings.worker.app_id}-{LEADS_TABLE}-changelog"


def read_lead(settings: Settings, lead_id: str, vault: Vault | None = None) -> dict[str, Any] | None:
    """Return the latest stored row of ``lead_id``, or None when the table has none.

    With ``vault`` the row's personal fields are opened; without, they stay sealed.

    The row sits in the partition its events were produced to. Producers that
    use Kafka's default partitioner pick the partition from murmur2 of the key,
    so that partition is read first and the others only when it has no row.
    """
    topic = changelog_topic(settings)
    key = lead_id.encode("utf-8")
    consumer = open_consumer(settings)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            return None
        first = lead_partition(lead_id, len(partitions))
        for partition in [first, *(p for p in partitions if p != first)]:
            found, payload = _latest_value(consumer, TopicPartition(topic, partition), key)
            if found:
                return None if payload is None else decode_lead(payload, lead_id, vault)
        return None
    finally:
        consumer.close()


def lead_partition(lead_id: str, partitions: int) -> int:
    """Return the partition Kafka's default partitioner gives ``lead_id`` (murmur2 of the key)."""
    return (murmur2(lead_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def open_consumer(settings: Settings) -> KafkaConsumer:
    """Return a consumer without a group, for reading topics from their start."""
    return connect(settings, KafkaConsumer, enable_auto_commit=False, group_id=None,
                   bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                   isolation_level="read_committed")  # rows of aborted transactions never happened


def read_partition(consumer: KafkaConsumer, partition: TopicPartition) -> dict[bytes, bytes | None]:
    """Return the latest value per key of one partition, as compaction would leave it (None: deleted)."""
    return {record.key: record.value for record in _records(consumer, partition) if record.key is not None}


def _latest_value(consumer: KafkaConsumer, partition: TopicPartition, key: bytes) -> tuple[bool, bytes | None]:
    """Return (found, value) of the last record with ``key``; a tombstone is (True, None)."""
    found, value = False, None
    for record in _records(consumer, partition):
        if record.key == key:
            found, value = True, record.value
    return found, value


def _records(consumer: KafkaConsumer, partition: TopicPartition) -> Iterator[Any]:
    """Yield the records of one partition from its start to its current end."""
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    end = consumer.end_offsets([partition])[partition]
    while consumer.position(partition) < end:
        for records in consumer.poll(timeout_ms=1000).values():
            yield from records
