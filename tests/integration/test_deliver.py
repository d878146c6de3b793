"""`nurture deliver` against the test broker and a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email.policy
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Iterator

import fastavro.validation
import orjson
import pytest
from aiosmtpd.controller import Controller
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from conftest import free_port
from nurture.config.settings import Settings, load_settings
from nurture.schemas import load_schema
from nurture.streams.codecs import decode_event, encode_command
from nurture.streams.kafka_clients import connect
from nurture.streams.report import read_topic

NURTURE = str(Path(sys.executable).with_name("nurture"))
HOUR_MS = 3600 * 1000
MAX_ATTEMPTS = 2
FROM = "news@shop.example"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class RecordingHandler:
    """Accepts mail except for two recipients: ``hard`` gets 550, ``soft`` gets 451 every time."""

    hard: str
    soft: str
    received: list[Received] = field(default_factory=list)
    refusals: dict[str, int] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in (self.hard, self.soft):
            self.refusals[address] = self.refusals.get(address, 0) + 1
            if address == self.hard:
                return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
            return f"451 4.2.0 <{address}>: Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=email.policy.default).parsebytes(envelope.content)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def messages_for(self, command_id: str) -> list[EmailMessage]:
        return [item.message for item in self.received if item.message["X-Nurture-Command-Id"] == command_id]


@dataclass
class Setup:
    settings: Settings
    env: dict[str, str]
    directory: Path
    handler: RecordingHandler
    hard: str
    soft: str


@pytest.fixture()
def setup(broker: str, tmp_path: Path) -> Iterator[Setup]:
    """Own topics and consumer group, an SMTP server on a free port and the worker's environment."""
    prefix = f"dl-{uuid.uuid4().hex[:8]}"
    hard, soft = f"{prefix}-gone@example.com", f"{prefix}-full@example.com"
    handler = RecordingHandler(hard=hard, soft=soft)
    port = free_port()
    server = Controller(handler, hostname="127.0.0.1", port=port)
    server.start()
    env = {
        **os.environ,
        "NURTURE_BROKER": broker,
        "NURTURE_TOPICS_COMMANDS": f"{prefix}.commands",
        "NURTURE_TOPICS_FEEDBACK": f"{prefix}.feedback",
        "NURTURE_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "NURTURE_LOG_FORMAT": "json",
        "NURTURE_LOG_LEVEL": "info",
        "NURTURE_DELIVER_GROUP_ID": f"{prefix}-deliver",
        "NURTURE_DELIVER_SMTP_HOST": "127.0.0.1",
        "NURTURE_DELIVER_SMTP_PORT": str(port),
        "NURTURE_DELIVER_SMTP_TIMEOUT_SECONDS": "10",
        "NURTURE_DELIVER_FROM_ADDRESS": f"Nurture <{FROM}>",
        "NURTURE_DELIVER_STATE_DIR": str(tmp_path / "state"),
        "NURTURE_DELIVER_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "NURTURE_DELIVER_RETRY_SECONDS": "0.2",
    }
    settings = load_settings(environ=env)
    _create_topics(settings)
    try:
        yield Setup(settings, env, tmp_path, handler, hard, soft)
    finally:
        server.stop()


def _create_topics(settings: Settings) -> None:
    admin = connect(settings, KafkaAdminClient)
    try:
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)
                             for name in (settings.topics.commands, settings.topics.feedback)],
                            wait_for_metadata=True)
    finally:
        admin.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _command(lead: str, template: str | None, personalisation: dict[str, str], **changes: Any) -> dict[str, Any]:
    now = _now_ms()
    command = {
        "schema_version": 2, "command_id": uuid.uuid4().hex, "lead_id": lead, "action": "send_email",
        "channel": "email", "template": template, "rule": "welcome", "trigger_event_id": uuid.uuid4().hex,
        "event_time": now, "created_at": now, "expires_at": now + 48 * HOUR_MS, "score": 12.5,
        "model_version": "m-test",
        "reasons": [{"feature": "forms_24h", "text": "1 form submission lately", "contribution": 0.43}],
        "personalisation": personalisation, "journey": None, "step": None, "stage": "lead",
        "stage_history": [], "recent_activity": [],
    }
    command.update(changes)
    return command


def _produce(producer: KafkaProducer, settings: Settings, lead: str, payload: bytes) -> None:
    producer.send(settings.topics.commands, key=lead.encode(), value=payload).get(timeout=30)


def _produce_command(producer: KafkaProducer, settings: Settings, command: dict[str, Any]) -> None:
    _produce(producer, settings, command["lead_id"], encode_command(command))


def _run_once(setup: Setup) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([NURTURE, "deliver", "--once"], env=setup.env, cwd=setup.directory,
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def _stopped(stderr: str) -> dict[str, Any]:
    stops = [event for event in _log_events(stderr) if event.get("event") == "deliver_stopped"]
    assert len(stops) == 1, stderr[-3000:]
    return stops[0]


def _feedback_by_command(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    by_command: dict[str, list[dict[str, Any]]] = {}
    for record in read_topic(settings, settings.topics.feedback):
        feedback = orjson.loads(record.value)
        assert record.key == feedback["lead_id"].encode()
        assert fastavro.validation.validate(feedback, load_schema("feedback"))
        event = decode_event("feedback", "json", record.value, record.key)  # as the engine reads it
        assert event.attrs["command_id"] == feedback["command_id"]
        by_command.setdefault(feedback["command_id"], []).append(feedback)
    return by_command


def _committed_offsets(settings: Settings) -> dict[TopicPartition, int]:
    admin = connect(settings, KafkaAdminClient)
    try:
        offsets = admin.list_group_offsets(settings.deliver.group_id)[settings.deliver.group_id]
    finally:
        admin.close()
    return {partition: meta.offset for partition, meta in offsets.items()}


def _end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = connect(settings, KafkaConsumer, group_id=None, isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(partitions)
        # A partition that never had a record has no committed offset.
        return {partition: offset for partition, offset in ends.items() if offset > 0}
    finally:
        consumer.close()


def _wait_for_feedback(settings: Settings, process: subprocess.Popen[bytes], log_path: Path) -> list[Any]:
    """Read the feedback topic until it has a record, while the worker process runs."""
    # Each round reads with a new consumer, because one created moments after the
    # topic can get metadata without its partitions and would then read nothing.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nurture deliver exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        records = read_topic(settings, settings.topics.feedback)
        if records:
            return records
        time.sleep(0.2)
    raise AssertionError(f"no feedback within 60 s; the worker's log:\n{log_path.read_text()[-3000:]}")


def _assert_no_personal_data(stderr: str, values: list[str]) -> None:
    for value in values:
        assert value not in stderr
        assert json.dumps(value)[1:-1] not in stderr  # as JSON escapes it


def test_deliver_sends_bounces_and_dedups(setup: Setup, producer: KafkaProducer) -> None:
    settings, handler = setup.settings, setup.handler
    zoe_address = f"zoe-{uuid.uuid4().hex[:6]}@example.com"
    plain_address = f"plain-{uuid.uuid4().hex[:6]}@example.com"
    zoe = _command("zoe", "welcome", {"email": zoe_address, "first_name": "Zoë Łucja"})
    plain = _command("plain", "case_study", {"email": plain_address},
                     rule="qualified_nurture/case_study", journey="qualified_nurture", step="case_study")
    hard = _command("hard", "welcome", {"email": setup.hard, "first_name": "Hanna"})
    soft = _command("soft", "buying_guide", {"email": setup.soft, "first_name": "Sören"})
    expired_address = f"late-{uuid.uuid4().hex[:6]}@example.com"
    expired = _command("late", "welcome", {"email": expired_address, "first_name": "Lena"},
                       created_at=_now_ms() - 49 * HOUR_MS, expires_at=_now_ms() - HOUR_MS)
    sms = _command("texted", "welcome", {"phone": "+48500100200"}, action="send_sms", channel="sms")
    old_version = {**_command("old", "welcome", {"email": "old@example.com"}), "schema_version": 1}

    for command in (zoe, plain, hard, soft, expired, sms, zoe):
        _produce_command(producer, settings, command)
    _produce(producer, settings, "old", orjson.dumps(old_version))
    _produce(producer, settings, "broken", b"{not json")

    first = _run_once(setup)

    assert len(handler.messages_for(zoe["command_id"])) == 1
    assert len(handler.received) == 2
    mail = handler.messages_for(zoe["command_id"])[0]
    assert mail["To"] == zoe_address
    assert mail["From"] == f"Nurture <{FROM}>"
    assert mail["Subject"] == "Welcome aboard, Zoë Łucja"
    text_part = mail.get_body(("plain",))
    assert text_part.get_content_charset() == "utf-8"
    assert text_part.get_content().splitlines()[0] == "Hi Zoë Łucja,"
    assert "Zoë Łucja".encode("utf-8") in text_part.get_payload(decode=True)
    assert "Hi Zoë Łucja," in mail.get_body(("html",)).get_content()
    envelope = next(item for item in handler.received if item.message is mail)
    assert envelope.mail_from == FROM
    assert envelope.rcpt_tos == [zoe_address]

    plain_mail = handler.messages_for(plain["command_id"])[0]
    assert plain_mail["Subject"] == "A case study you may like"
    assert plain_mail.get_body(("plain",)).get_content().splitlines()[0] == "Hi there,"

    assert handler.refusals[setup.hard] == 1
    assert handler.refusals[setup.soft] == MAX_ATTEMPTS
    assert not [item for item in handler.received if expired_address in item.rcpt_tos]

    feedback = _feedback_by_command(settings)
    assert sorted(feedback) == sorted(c["command_id"] for c in (zoe, plain, hard, soft, expired))
    assert all(len(records) == 1 for records in feedback.values())
    assert feedback[zoe["command_id"]][0]["status"] == "sent"
    assert feedback[zoe["command_id"]][0]["lead_id"] == "zoe"
    assert feedback[plain["command_id"]][0]["status"] == "sent"
    hard_feedback = feedback[hard["command_id"]][0]
    assert (hard_feedback["status"], hard_feedback["bounce"]) == ("bounced", "hard")
    assert hard_feedback["detail"].startswith("550 5.1.1 <address>")
    soft_feedback = feedback[soft["command_id"]][0]
    assert (soft_feedback["status"], soft_feedback["bounce"]) == ("bounced", "soft")
    assert soft_feedback["detail"].startswith("451 4.2.0")
    expired_feedback = feedback[expired["command_id"]][0]
    assert (expired_feedback["status"], expired_feedback["detail"]) == ("failed", "expired")
    assert len({records[0]["event_id"] for records in feedback.values()}) == 5

    stopped = _stopped(first.stderr)
    assert stopped["reason"] == "caught_up"
    assert (stopped["sent"], stopped["bounced"], stopped["failed"]) == (2, 2, 1)
    assert (stopped["repeated"], stopped["other_channel"]) == (1, 1)
    assert (stopped["unknown_version"], stopped["invalid"]) == (1, 1)
    assert _committed_offsets(settings) == _end_offsets(settings, settings.topics.commands)
    _assert_no_personal_data(first.stderr, [zoe_address, plain_address, setup.hard, setup.soft,
                                            expired_address, "Zoë Łucja", "Sören", "+48500100200"])

    # A restart: the command sent twice before comes a third time, with one new command.
    later = _command("later", "top_picks", {"email": f"later-{uuid.uuid4().hex[:6]}@example.com"})
    _produce_command(producer, settings, zoe)
    _produce_command(producer, settings, later)

    second = _run_once(setup)

    assert len(handler.messages_for(zoe["command_id"])) == 1
    assert len(handler.messages_for(later["command_id"])) == 1
    assert len(handler.received) == 3
    feedback = _feedback_by_command(settings)
    assert len(feedback) == 6
    assert [record["status"] for record in feedback[later["command_id"]]] == ["sent"]
    assert len(feedback[zoe["command_id"]]) == 1
    stopped = _stopped(second.stderr)
    assert (stopped["sent"], stopped["repeated"], stopped["failed"]) == (1, 1, 0)


def test_deliver_stops_on_sigterm(setup: Setup, producer: KafkaProducer) -> None:
    settings = setup.settings
    log_path = setup.directory / "deliver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([NURTURE, "deliver"], env=setup.env, cwd=setup.directory,
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        command = _command("waiting", "welcome", {"email": f"w-{uuid.uuid4().hex[:6]}@example.com"})
        _produce_command(producer, settings, command)
        records = _wait_for_feedback(settings, process, log_path)

        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    output = log_path.read_text()
    assert returncode == 0, output[-3000:]
    assert orjson.loads(records[0].value)["status"] == "sent"
    stopped = _stopped(output)
    assert stopped["reason"] == "SIGTERM"
    assert stopped["sent"] == 1
    assert _committed_offsets(settings) == _end_offsets(settings, settings.topics.commands)
