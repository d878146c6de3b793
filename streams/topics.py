"""Creating the engine's topics with kafka-python's admin client."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError

from nurture.config.errors import NurtureError
from nurture.config.settings import Settings
from nurture.streams.kafka_clients import connect

log = structlog.get_logger("nurture.topics")

TABLES = ("leads", "timers", "ledger")  # the Faust tables of streams/app.py


class TopicError(NurtureError):
    """Topics could not be created or do not have the partition count the engine needs."""


@dataclass(frozen=True)
class TopicStatus:
    name: str
    partitions: int
    created: bool


def ensure_topics(settings: Settings) -> list[TopicStatus]:
    """Create the missing topics and check the partition count of existing ones."""
    partitions_needed = settings.kafka.partitions
    timeout_ms = int(settings.kafka.admin_timeout_seconds * 1000)
    admin = connect(settings, KafkaAdminClient, client_id=f"{settings.worker.app_id}-admin",
                    request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    try:
        existing = set(admin.list_topics())
        created = []
        for name in _names(settings):
            if name in existing:
                continue
            options = {"num_partitions": partitions_needed,
                       "replication_factor": settings.kafka.replication_factor}
            if name in compacted_topics(settings):
                options["configs"] = {"cleanup.policy": "compact"}
            try:
                admin.create_topics({name: options}, wait_for_metadata=True)
                created.append(name)
                log.info("topic_created", topic=name, partitions=partitions_needed)
            except TopicAlreadyExistsError:
                pass
        counts = _partition_counts(admin, _names(settings))
    except KafkaError as exc:
        raise TopicError(f"topic creation failed on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()

    _check_event_partitions(settings, counts)
    from nurture.streams.repartition import check_placement  # imported here: it imports this module

    check_placement(settings)
    return [TopicStatus(name, counts[name], name in created) for name in _names(settings)]


def changelog_topics(settings: Settings) -> tuple[str, ...]:
    """Return the tables' changelog topics, named as Faust names them (APP_ID-TABLE-changelog).

    They are created here, before Faust starts, because a worker whose first
    rebalance comes before Faust has created a new changelog finds it with no
    partitions and stops its agent with PartitionsMismatch.
    """
    app_id = settings.worker.app_id
    return tuple(f"{app_id}-{table}-changelog" for table in TABLES)


def compacted_topics(settings: Settings) -> tuple[str, ...]:
    """Topics that keep the latest record per key: the changelogs and the erasure memory."""
    return (*changelog_topics(settings), settings.erasures_topic)


def _names(settings: Settings) -> tuple[str, ...]:
    return (*settings.topics.all_topics(), settings.timers_topic, *compacted_topics(settings))


def _partition_counts(admin: KafkaAdminClient, names: tuple[str, ...]) -> dict[str, int]:
    return {
        description["name"]: len(description["partitions"])
        for description in admin.describe_topics(list(names))
    }


def _check_event_partitions(settings: Settings, counts: dict[str, int]) -> None:
    """Input topics share the lead table's partitioning, so their counts must match it."""
    partitions_needed = settings.kafka.partitions
    for name in (*settings.topics.keyed_by_lead(), settings.timers_topic, *changelog_topics(settings)):
        if counts.get(name) != partitions_needed:
            raise TopicError(
                f"topic {name} has {counts.get(name)} partitions but the engine is set to "
                f"{partitions_needed} (NURTURE_KAFKA_PARTITIONS); input topics and the lead table must "
                "have the same count"
            )
