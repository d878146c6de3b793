"""``nurture deliver``: the reference delivery worker for email commands.

It reads the commands topic in a consumer group and handles one command at a
time: decide the outcome (sent, bounced, failed or expired), store it in the
de-duplication store, publish the feedback and wait for the broker's
acknowledgement, mark it published, then commit the command's offset. Delivery
is therefore at least once. A command read again after a crash or a rebalance
finds its id in the store and gets neither a second mail nor a second feedback,
except that feedback the broker never acknowledged is published again.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, Callable

import fastavro.validation
import orjson
import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from nurture.config.errors import NurtureError
from nurture.config.settings import DeliverSettings, Settings
from nurture.schemas import COMMAND_SCHEMA_VERSION, load_schema
from nurture.streams.codecs import decode_command, encode_feedback
from nurture.streams.deliver_feedback import BOUNCED, SENT, Outcome, build_feedback, redact
from nurture.streams.deliver_mail import MailDelivery
from nurture.streams.deliver_smtp import SmtpMailer
from nurture.streams.deliver_store import DeliveryStore
from nurture.streams.deliver_templates import TemplateBook
from nurture.streams.kafka_clients import connect

log = structlog.get_logger("nurture.deliver")

POLL_TIMEOUT_MS = 500
PUBLISH_TIMEOUT_SECONDS = 60.0
PURGE_INTERVAL_MS = 3600 * 1000


class DeliveryError(NurtureError):
    """The delivery worker cannot start, or cannot publish feedback and has to stop."""


@dataclass
class DeliveryCounts:
    sent: int = 0
    bounced: int = 0
    failed: int = 0
    repeated: int = 0  # dropped because the store already contained the command id
    other_channel: int = 0
    unknown_version: int = 0
    invalid: int = 0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class DeliveryWorker:
    """The consume loop: one command at a time, offsets committed after the feedback is acknowledged."""

    def __init__(self, settings: Settings, consumer: KafkaConsumer, producer: KafkaProducer,
                 mail: MailDelivery, store: DeliveryStore, stopping: threading.Event,
                 clock: Callable[[], int] = now_ms) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._mail = mail
        self._store = store
        self._stopping = stopping
        self._clock = clock
        self._joined = False
        self._next_purge = 0
        self._unknown_versions: set[str] = set()
        self.stop_reason = "stopped"
        self.counts = DeliveryCounts()

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the command in hand. Safe to call from a signal handler."""
        self.stop_reason = reason
        self._stopping.set()

    def run(self, once: bool = False) -> str:
        """Consume until stopped, or with ``once`` until every assigned partition is caught up."""
        self._consumer.subscribe([self._settings.topics.commands], listener=_AssignmentListener(self))
        while not self._stopping.is_set():
            self._purge_if_due()
            batches = self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS, max_records=1)
            records = [record for batch in batches.values() for record in batch]
            for record in records:
                if not self.handle(record):
                    break
                self._commit(record)
            if once and not records and self._caught_up():
                self.stop_reason = "caught_up"
                break

        return self.stop_reason

    def handle(self, record: Any) -> bool:
        """Handle one command record. Return False when a stop left it unhandled, so its offset stays uncommitted."""
        command = self._decode(record)
        if command is None:
            return True
        ids = {"command_id": command["command_id"], "lead_id": command["lead_id"]}
        if command["channel"] != "email":
            self.counts.other_channel += 1
            log.debug("command_skipped", **ids, channel=command["channel"], action=command["action"])
            return True

        handled = self._store.lookup(command["command_id"])
        if handled is not None and handled.published:
            self.counts.repeated += 1
            log.info("command_repeated", **ids, detail="already handled; no mail and no feedback")
            return True
        if handled is not None:
            payload = handled.feedback
            log.info("feedback_republished", **ids,
                     detail="the outcome was stored but its feedback never acknowledged")
        else:
            outcome = self._mail.deliver(command)
            if outcome is None:
                return False
            payload = encode_feedback(build_feedback(command, outcome, self._clock()))
            self._store.record(command["command_id"], command["lead_id"], payload, self._clock())
            self._note_outcome(command, outcome)

        self._publish(command["lead_id"], payload, ids)
        self._store.mark_published(command["command_id"])
        return True

    def joined(self) -> None:
        self._joined = True

    def _decode(self, record: Any) -> dict[str, Any] | None:
        place = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            command = decode_command(record.value or b"")
        except orjson.JSONDecodeError as exc:
            self.counts.invalid += 1
            log.error("command_invalid", **place, error=f"not valid UTF-8 JSON: {exc}")
            return None
        if not isinstance(command, dict):
            self.counts.invalid += 1
            log.error("command_invalid", **place, error="not a JSON object")
            return None

        version = command.get("schema_version")
        if version != COMMAND_SCHEMA_VERSION:
            self._note_unknown_version(command, place)
            return None
        schema = load_schema("command")
        if not fastavro.validation.validate(command, schema, raise_errors=False):
            self.counts.invalid += 1
            log.error("command_invalid", **place, command_id=str(command.get("command_id")),
                      lead_id=str(command.get("lead_id")), error="does not match schemas/command.avsc",
                      fields=_invalid_fields(command, schema))
            return None

        return command

    def _note_unknown_version(self, command: dict[str, Any], place: dict[str, Any]) -> None:
        # The first record of each version is logged as a warning, later ones at debug level.
        self.counts.unknown_version += 1
        version = repr(command.get("schema_version"))
        first = version not in self._unknown_versions
        self._unknown_versions.add(version)
        (log.warning if first else log.debug)(
            "command_version_unknown", **place, schema_version=version,
            command_id=str(command.get("command_id")), lead_id=str(command.get("lead_id")),
            expected=COMMAND_SCHEMA_VERSION, skipped_so_far=self.counts.unknown_version)

    def _note_outcome(self, command: dict[str, Any], outcome: Outcome) -> None:
        fields = {"command_id": command["command_id"], "lead_id": command["lead_id"],
                  "template": command.get("template"), "attempts": outcome.attempts}
        if outcome.status == SENT:
            self.counts.sent += 1
            log.info("mail_sent", **fields)
        elif outcome.status == BOUNCED:
            self.counts.bounced += 1
            log.warning("mail_bounced", **fields, bounce=outcome.bounce, error=redact(outcome.detail))
        else:
            self.counts.failed += 1
            log.warning("mail_failed", **fields, error=redact(outcome.detail))

    def _publish(self, lead_id: str, payload: bytes, ids: dict[str, str]) -> None:
        topic = self._settings.topics.feedback
        try:
            future = self._producer.send(topic, key=lead_id.encode("utf-8"), value=payload)
            future.get(timeout=PUBLISH_TIMEOUT_SECONDS)
        except KafkaError as exc:
            log.error("feedback_publish_failed", **ids, topic=topic, error=repr(exc))
            raise DeliveryError(
                f"feedback could not be published to {topic} on {self._settings.bootstrap_servers}: "
                f"{exc!r}; the command stays uncommitted and its stored feedback is published "
                "after a restart") from exc

    def _commit(self, record: Any) -> None:
        partition = TopicPartition(record.topic, record.partition)
        try:
            self._consumer.commit({partition: OffsetAndMetadata(record.offset + 1, "", -1)})
        except KafkaError as exc:
            # The next reader of the partition gets the command again and drops it as a repeat.
            log.warning("offset_commit_failed", topic=record.topic, partition=record.partition,
                        offset=record.offset, error=repr(exc))

    def _caught_up(self) -> bool:
        if not self._joined:
            return False
        assigned = list(self._consumer.assignment())
        ends = self._consumer.end_offsets(assigned) if assigned else {}
        return all(self._consumer.position(partition) >= ends[partition] for partition in assigned)

    def _purge_if_due(self) -> None:
        now = self._clock()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_MS
        removed = self._store.purge(now)
        if removed:
            log.info("store_purged", removed=removed, store=str(self._store.path))


class _AssignmentListener(ConsumerRebalanceListener):
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        log.info("partitions_revoked", partitions=_names(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._worker.joined()
        log.info("partitions_assigned", partitions=_names(assigned))


def _names(partitions: Any) -> list[str]:
    return sorted(f"{partition.topic}[{partition.partition}]" for partition in partitions)


def _invalid_fields(command: dict[str, Any], schema: Any) -> list[str]:
    """Return the names of the fields that fail validation, without values, which may be personal data."""
    try:
        fastavro.validation.validate(command, schema, raise_errors=True)
    except fastavro.validation.ValidationError as exc:
        return sorted({str(error.field) for error in exc.errors})
    return []


def run_delivery(settings: Settings, once: bool = False) -> DeliveryCounts:
    """Check the settings, templates, SMTP server and topics, then run the worker until it stops."""
    deliver = settings.deliver
    templates = TemplateBook.load(deliver.templates_dir)
    mailer = SmtpMailer(deliver, _smtp_password(deliver))
    mailer.check()
    store = DeliveryStore.open(deliver.state_dir)
    stopping = threading.Event()
    try:
        consumer, producer = _kafka_clients(settings)
    except NurtureError:
        store.close()
        raise

    mail = MailDelivery(deliver, templates, mailer, now_ms, stopping)
    worker = DeliveryWorker(settings, consumer, producer, mail, store, stopping)

    def on_signal(number: int, frame: FrameType | None) -> None:
        worker.stop(signal.Signals(number).name)

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGTERM, signal.SIGINT)}
    log.info("deliver_started", group_id=deliver.group_id, commands_topic=settings.topics.commands,
             feedback_topic=settings.topics.feedback, broker=settings.bootstrap_servers,
             security_protocol=settings.kafka.security_protocol,
             smtp_server=f"{deliver.smtp_host}:{deliver.smtp_port}", smtp_starttls=deliver.smtp_starttls,
             smtp_login=bool(deliver.smtp_user), templates=templates.names(),
             templates_dir=str(templates.directory), store=str(store.path), once=once,
             settings_source=settings.source)
    try:
        reason = worker.run(once=once)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        consumer.close(autocommit=False)
        producer.close(timeout=PUBLISH_TIMEOUT_SECONDS)
        store.close()
    log.info("deliver_stopped", reason=reason, **dataclasses.asdict(worker.counts))

    return worker.counts


def _smtp_password(deliver: DeliverSettings) -> str | None:
    """Read the SMTP password from the variable that ``smtp_password_env`` names, when a user is set."""
    if not deliver.smtp_user:
        return None
    name = deliver.smtp_password_env
    if not name or name.upper().startswith("NURTURE_"):
        raise DeliveryError(
            f"[deliver] smtp_password_env is {name!r}; name a variable outside NURTURE_*, such as "
            "SMTP_PASSWORD, because every NURTURE_* variable must be a setting")
    password = os.environ.get(name)
    if not password:
        raise DeliveryError(
            f"[deliver] smtp_user is set, but the variable {name} that smtp_password_env names is "
            "unset or empty; export the SMTP password in it")
    return password


def _kafka_clients(settings: Settings) -> tuple[KafkaConsumer, KafkaProducer]:
    deliver = settings.deliver
    consumer = connect(settings, KafkaConsumer, group_id=deliver.group_id, client_id=deliver.group_id,
                       enable_auto_commit=False, auto_offset_reset="earliest",
                       max_poll_interval_ms=_max_poll_interval_ms(deliver),
                       # The engine publishes commands in transactions: an aborted one is no command.
                       isolation_level="read_committed")
    try:
        existing = consumer.topics()
        producer = connect(settings, KafkaProducer, acks="all", client_id=f"{deliver.group_id}-feedback")
    except KafkaError as exc:
        consumer.close(autocommit=False)
        raise DeliveryError(f"Kafka request to {settings.bootstrap_servers} failed: {exc!r}") from exc
    except NurtureError:
        consumer.close(autocommit=False)
        raise
    missing = [topic for topic in (settings.topics.commands, settings.topics.feedback) if topic not in existing]
    if missing:
        consumer.close(autocommit=False)
        producer.close()
        noun = "topic" if len(missing) == 1 else "topics"
        raise DeliveryError(
            f"{noun} {', '.join(missing)} not found on {settings.bootstrap_servers}; "
            "create the topics with `nurture topics create`")

    return consumer, producer


def _max_poll_interval_ms(deliver: DeliverSettings) -> int:
    """Allow the slowest command between two polls, so that the group keeps this member.

    NOTE: an estimate. Each attempt is counted as five SMTP round trips (connect,
    EHLO, STARTTLS, login, message) of at most ``smtp_timeout_seconds`` each.
    """
    attempts = deliver.max_attempts
    seconds = attempts * 5 * deliver.smtp_timeout_seconds + (attempts - 1) * deliver.retry_seconds + 60
    return max(300_000, int(seconds * 1000))
