"""Reading the consent ledger and lead rows from their changelogs, and sending privacy requests."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from nurture.agents.privacy.erasure import ErasureMemory
from nurture.agents.privacy.export import build_export
from nurture.agents.privacy.keys import keygen_text, load_keys, parse_keys
from nurture.agents.privacy.ledger import Problem, subject_entries, verify_partition
from nurture.agents.privacy.vault import Vault
from nurture.config.errors import NurtureError
from nurture.config.settings import Settings
from nurture.streams.codecs import encode_event
from nurture.schemas.records import Event
from nurture.streams.kafka_clients import connect
from nurture.streams.leads import open_consumer, read_lead, read_partition
from nurture.streams.topics import TABLES


class PrivacyError(NurtureError):
    """A privacy command could not read or write what it needs."""


@dataclass(frozen=True)
class ChainResult:
    partition: int
    entries: int
    head: str
    problem: Problem | None


def ledger_topic(settings: Settings) -> str:
    return f"{settings.worker.app_id}-{TABLES[2]}-changelog"


def verify_ledger(settings: Settings) -> list[ChainResult]:
    """Check the chain of every partition of the ledger's changelog."""
    topic = ledger_topic(settings)
    consumer = _consumer(settings)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or [])
        if not partitions:
            raise PrivacyError(f"topic {topic} does not exist; no worker has run with this app id yet")
        results = []
        for partition in partitions:
            stored = read_partition(consumer, TopicPartition(topic, partition))
            count, head, problem = verify_partition(partition, stored)
            results.append(ChainResult(partition, count, head, problem))
        return results
    finally:
        consumer.close()


def lead_history(settings: Settings, lead_id: str) -> list[dict[str, Any]]:
    """Return the ledger entries about ``lead_id``, also after its erasure (they name it by keyed hash).

    Every partition is read: after the topics were repartitioned, a lead's older entries
    stay in the chain of its former partition.
    """
    memory = ErasureMemory(_ring(settings))
    subject = memory.key("lead", lead_id)
    topic = ledger_topic(settings)
    consumer = _consumer(settings)
    try:
        values: list[bytes | None] = []
        for partition in sorted(consumer.partitions_for_topic(topic) or []):
            values.extend(read_partition(consumer, TopicPartition(topic, partition)).values())
        return subject_entries(values, subject)
    finally:
        consumer.close()


def export_lead(settings: Settings, lead_id: str) -> dict[str, Any] | None:
    """Return everything held about ``lead_id``: its opened row and its consent ledger entries."""
    vault = Vault(_ring(settings))
    try:
        lead = read_lead(settings, lead_id, vault)
    except KafkaError as exc:
        raise PrivacyError(f"cannot read the lead table at {settings.bootstrap_servers}: {exc}") from exc
    history = lead_history(settings, lead_id)
    if lead is None and not history:
        return None
    if lead is None:
        return {"lead_id": lead_id, "exported_at": _now(), "profile": None, "consent_history": history,
                "note": "no lead row: the lead was erased or never seen; only consent ledger entries remain"}
    return build_export(lead, history, _now())


def send_request(settings: Settings, action: str, lead_id: str, requested_by: str,
                 wait_seconds: float) -> tuple[str, dict[str, Any] | None]:
    """Put a request on privacy.requests; wait up to ``wait_seconds`` for its receipt."""
    request_id = f"req-{uuid.uuid4()}"
    now = _now()
    request = Event("privacy", request_id, lead_id, now, now, {"action": action, "requested_by": requested_by})
    consumer = _consumer(settings)
    try:
        receipts = _receipt_partitions(consumer, settings.topics.receipts)
        try:
            producer = connect(settings, KafkaProducer, acks="all")
            producer.send(settings.topics.requests, key=lead_id.encode("utf-8"), value=encode_event(request, "json"))
            producer.flush()
            producer.close()
        except KafkaError as exc:
            raise PrivacyError(f"cannot send the request to {settings.topics.requests}: {exc}") from exc
        return request_id, _await_receipt(consumer, receipts, request_id, wait_seconds)
    finally:
        consumer.close()


def _receipt_partitions(consumer: Any, topic: str) -> list[TopicPartition]:
    partitions = [TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic) or [])]
    if not partitions:
        raise PrivacyError(f"topic {topic} does not exist; run `nurture topics create`")
    consumer.assign(partitions)
    for partition, end in consumer.end_offsets(partitions).items():
        consumer.seek(partition, end)
    return partitions


def _await_receipt(consumer: Any, partitions: list[TopicPartition], request_id: str,
                   wait_seconds: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait_seconds
    key = request_id.encode("utf-8")
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                if record.key == key and record.value:
                    return orjson.loads(record.value)
    return None


def write_keys(path: Path, rotate: bool) -> str:
    """Create a key file, or add a new current data key to it; return the current key's name."""
    if rotate:
        if not path.is_file():
            raise PrivacyError(f"{path} does not exist; create it with `nurture privacy keygen {path}`")
        text = keygen_text(path.read_text(encoding="utf-8"))
    else:
        if path.exists():
            raise PrivacyError(f"{path} exists; use --rotate to add a key, or choose another file")
        text = keygen_text()
    ring = parse_keys(text, str(path))
    write_private(path, text.encode("utf-8"))
    return ring.current


def write_private(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(payload)
    os.replace(temporary, path)


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ring(settings: Settings) -> Any:
    return load_keys(settings.privacy.key_file, settings.privacy.keys)


def _consumer(settings: Settings) -> Any:
    try:
        return open_consumer(settings)
    except KafkaError as exc:
        raise PrivacyError(f"cannot reach the Kafka broker at {settings.bootstrap_servers}: {exc}; "
                           "start it or set NURTURE_BROKER") from exc


def _now() -> int:
    return time.time_ns() // 1_000_000
