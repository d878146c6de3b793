"""Growing the partition count of a deployment, and finding lead rows on the wrong partition.

Kafka's default partitioner puts a key on partition murmur2(key) mod count. A
lead's row lives in the changelog partition of its events, so when partitions
are added, the lead's new events go to another partition than its row, and the
worker there starts the lead from an empty row. ``repartition`` grows every
topic keyed by lead and moves each row, and each timer index entry, to the
partition its lead maps to under the new count.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions
from kafka.errors import GroupIdNotFoundError
from kafka.partitioner.default import murmur2

from nurture.config.settings import Settings
from nurture.streams.kafka_clients import connect
from nurture.streams.timers import parse_index_key
from nurture.streams.topics import TopicError, changelog_topics

log = structlog.get_logger("nurture.repartition")

# NOTE: the start-up check reads only the latest records of each changelog partition, so rows
# written long before a careless partition change, and not touched since, can go unnoticed.
SAMPLE_RECORDS = 200


@dataclass(frozen=True)
class Misplaced:
    """A row whose key maps to another partition than the one it is stored in."""

    topic: str
    partition: int
    expected: int


@dataclass
class MoveReport:
    """Counts of a repartition: topics grown and rows moved per changelog."""

    grown: list[str] = field(default_factory=list)
    moved: dict[str, int] = field(default_factory=dict)


def partition_for(lead_id: bytes, count: int) -> int:
    """Return the partition Kafka's default partitioner picks for ``lead_id``."""
    return (murmur2(lead_id) & 0x7FFFFFFF) % count


def find_misplaced(settings: Settings, sample: int = SAMPLE_RECORDS) -> list[Misplaced]:
    """Return rows among the latest ``sample`` of each changelog partition that belong elsewhere."""
    found = []
    with _consumer(settings) as consumer:
        for topic, lead_of in _changelogs(settings):
            latest = _latest_values(consumer, topic, sample)
            count = len(consumer.partitions_for_topic(topic) or ())
            for (partition, key), value in latest.items():
                if key is None or value is None:
                    continue
                expected = partition_for(lead_of(key), count)
                if expected != partition:
                    found.append(Misplaced(topic, partition, expected))
    return found


def check_placement(settings: Settings) -> None:
    """Raise TopicError when lead rows sit on partitions their keys no longer map to."""
    misplaced = find_misplaced(settings)
    if not misplaced:
        return
    first = misplaced[0]
    raise TopicError(
        f"{len(misplaced)} rows of {first.topic} are on the wrong partition (one on {first.partition} "
        f"belongs on {first.expected}), so partitions were added after the rows were written. "
        "Stop every worker and run `nurture topics repartition --partitions "
        f"{settings.kafka.partitions}`; docs/scaling.md explains why"
    )


def repartition(settings: Settings, partitions: int,
                progress: Callable[[str], None] = lambda line: None) -> MoveReport:
    """Grow the topics keyed by lead to ``partitions`` and move rows to their new partitions."""
    admin = connect(settings, KafkaAdminClient, client_id=f"{settings.worker.app_id}-repartition")
    report = MoveReport()
    try:
        _check_no_workers(admin, settings.worker.app_id)
        names = [*settings.topics.keyed_by_lead(), settings.timers_topic, *changelog_topics(settings)]
        counts = {item["name"]: len(item["partitions"]) for item in admin.describe_topics(names)}
        _check_growth(counts, partitions)
        grow = {name: NewPartitions(partitions) for name, count in counts.items() if count < partitions}
        if grow:
            admin.create_partitions(grow)
            report.grown = sorted(grow)
            progress(f"grew {len(grow)} topics to {partitions} partitions")
    finally:
        admin.close()
    for topic, lead_of in _changelogs(settings):
        report.moved[topic] = _move_rows(settings, topic, lead_of, partitions)
        progress(f"moved {report.moved[topic]} rows of {topic}")
    return report


def _check_no_workers(admin: KafkaAdminClient, group: str) -> None:
    try:
        description = admin.describe_groups([group]).get(group, {})
    except GroupIdNotFoundError:
        return  # no worker ever joined
    members = description.get("members") or []
    if members:
        raise TopicError(f"consumer group {group} has {len(members)} members; stop every worker "
                         "of the app before repartitioning")


def _check_growth(counts: dict[str, int], partitions: int) -> None:
    for name, count in counts.items():
        if count > partitions:
            raise TopicError(f"topic {name} has {count} partitions, more than {partitions}; "
                             "Kafka cannot remove partitions, so choose at least that many")


def _move_rows(settings: Settings, topic: str, lead_of: Callable[[bytes], bytes], partitions: int) -> int:
    with _consumer(settings) as consumer:
        latest = _latest_values(consumer, topic, None)
    producer = connect(settings, KafkaProducer, acks="all")
    moved = 0
    try:
        for (partition, key), value in latest.items():
            if key is None or value is None:
                continue
            target = partition_for(lead_of(key), partitions)
            if target == partition:
                continue
            producer.send(topic, key=key, value=value, partition=target)
            producer.send(topic, key=key, value=None, partition=partition)  # tombstone at the old place
            moved += 1
        producer.flush()
    finally:
        producer.close()
    log.info("rows_moved", topic=topic, rows=moved, partitions=partitions)
    return moved


def _changelogs(settings: Settings) -> list[tuple[str, Callable[[bytes], bytes]]]:
    """Return the changelogs keyed by lead, with the function that finds the lead id in a row's key.

    The consent ledger's changelog is not among them: its entries stay in the chain of
    the partition that wrote them, and a grown topic starts new chains in its new partitions.
    """
    leads, timers = changelog_topics(settings)[:2]
    return [(leads, lambda key: key), (timers, lambda key: parse_index_key(key)[1])]


@contextmanager
def _consumer(settings: Settings) -> Iterator[KafkaConsumer]:
    """Yield a consumer without a group and close it on exit."""
    client = connect(settings, KafkaConsumer, group_id=None, enable_auto_commit=False)
    try:
        yield client
    finally:
        client.close()


def _latest_values(consumer: KafkaConsumer, topic: str, sample: int | None) -> dict[tuple[int, bytes], bytes | None]:
    """Return the latest value per (partition, key), of the last ``sample`` records or of all."""
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        return {}
    consumer.assign(partitions)
    ends = consumer.end_offsets(partitions)
    starts = consumer.beginning_offsets(partitions)
    for tp in partitions:
        consumer.seek(tp, starts[tp] if sample is None else max(starts[tp], ends[tp] - sample))
    latest: dict[tuple[int, bytes], bytes | None] = {}
    for record in _records_until(consumer, partitions, ends):
        latest[(record.partition, record.key)] = record.value
    return latest


def _records_until(consumer: KafkaConsumer, partitions: list[TopicPartition],
                   ends: dict[TopicPartition, int]) -> Iterator[object]:
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for batch in consumer.poll(timeout_ms=1000).values():
            yield from batch
