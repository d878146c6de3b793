"""Reading commands and dead letters back from Kafka and summarising them."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from nurture.config.errors import NurtureError
from nurture.config.settings import Settings
from nurture.streams.kafka_clients import connect

log = structlog.get_logger("nurture.report")


@dataclass
class Report:
    commands: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, str]] = field(default_factory=list)


def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Return every record of ``topic`` from the earliest offset to the current end."""
    consumer = connect(settings, KafkaConsumer, enable_auto_commit=False, group_id=None,
                       isolation_level="read_committed")  # records of open or aborted transactions do not count
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[Any] = []
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def read_report(settings: Settings) -> Report:
    report = Report()
    for record in read_topic(settings, settings.topics.commands):
        report.commands.append(orjson.loads(record.value))
    for record in read_topic(settings, settings.topics.deadletter):
        headers = {name: value.decode("utf-8", "replace") for name, value in record.headers or []}
        report.dead_letters.append(headers)
    return report


@dataclass(frozen=True)
class IdleResult:
    idle: bool
    reason: str = ""


def wait_until_idle(settings: Settings, timeout_seconds: float, quiet_seconds: float = 3.0,
                    memberless_seconds: float = 15.0) -> IdleResult:
    """Wait until the worker group has committed every event up to the topics' end.

    Gives up early when the group has had no member for ``memberless_seconds``
    while events wait, because then no worker is running to catch up.
    """
    group = settings.worker.app_id
    admin = connect(settings, KafkaAdminClient)
    try:
        consumer = connect(settings, KafkaConsumer, group_id=None, isolation_level="read_committed")
    except NurtureError:
        admin.close()
        raise
    deadline = time.monotonic() + timeout_seconds
    caught_up_since: float | None = None
    memberless_since: float | None = None
    try:
        partitions = [TopicPartition(topic, p) for topic in settings.topics.event_topics()
                      for p in sorted(consumer.partitions_for_topic(topic) or [])]
        while time.monotonic() < deadline:
            end = consumer.end_offsets(partitions)
            committed = admin.list_group_offsets(group).get(group, {})
            lag = sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)
            now = time.monotonic()
            if lag <= 0:
                caught_up_since = caught_up_since or now
                if now - caught_up_since >= quiet_seconds:
                    return IdleResult(True)
            else:
                caught_up_since = None
                memberless_since = None if _has_members(admin, group) else (memberless_since or now)
                if memberless_since is not None and now - memberless_since >= memberless_seconds:
                    return IdleResult(False, f"no worker of group {group} is running and {lag} events wait")
                log.info("waiting_for_worker", group=group, lag=lag)
            time.sleep(1.0)
        return IdleResult(False, f"the worker group {group} had not caught up after {timeout_seconds:.0f} s")
    finally:
        consumer.close()
        admin.close()


def _has_members(admin: KafkaAdminClient, group: str) -> bool:
    description = admin.describe_groups([group]).get(group) or {}
    return bool(description.get("members"))


def format_report(report: Report, top: int = 5) -> str:
    lines = [f"Commands: {len(report.commands)}"]
    by_rule = Counter((c["action"], c["rule"], c.get("template") or "-") for c in report.commands)
    widths = [max([len(title), *(len(key[column]) for key in by_rule)]) + 2
              for column, title in enumerate(("action", "rule", "template"))]
    lines.append(f"  {'action':<{widths[0]}}{'rule':<{widths[1]}}{'template':<{widths[2]}}count")
    for (action, rule, template), count in sorted(by_rule.items()):
        lines.append(f"  {action:<{widths[0]}}{rule:<{widths[1]}}{template:<{widths[2]}}{count}")

    latest: dict[str, dict[str, Any]] = {}
    for command in report.commands:
        latest[command["lead_id"]] = command
    leaders = sorted(latest.values(), key=lambda c: (-c["score"], c["lead_id"]))[:top]
    lines.append("")
    lines.append(f"Top {len(leaders)} leads by score at their latest command:")
    for command in leaders:
        lines.append(f"  {command['lead_id']}  score {command['score']:.1f}  "
                     f"model {command['model_version']}  last action {command['action']}")
        for reason in command["reasons"]:
            lines.append(f"      - {reason['text']}")

    lines.append("")
    lines.append(f"Dead-lettered events: {len(report.dead_letters)}")
    reasons = Counter((d.get("nurture.source.topic", "?"), d.get("nurture.reason", "?"))
                      for d in report.dead_letters)
    for (topic, reason), count in sorted(reasons.items()):
        lines.append(f"  {topic:<20}{reason:<24}{count}")

    return "\n".join(lines)
