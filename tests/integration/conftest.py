"""Integration fixtures: a real worker process against the broker in NURTURE_BROKER."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from factories import TEST_KEYS
from nurture.config.settings import Settings, load_settings
from nurture.streams.codecs import encode_event
from nurture.streams.kafka_clients import connect



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> str:
    url = os.environ.get("NURTURE_BROKER")
    if not url:
        pytest.skip("NURTURE_BROKER is not set; run the suite with `make test`, which starts a broker")
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """A `nurture worker` subprocess with its own app id, data dir and web port."""

    def __init__(self, directory: Path, broker: str, model_dir: Path, extra_env: dict[str, str],
                 own_topics: bool = False) -> None:
        self.directory = directory
        self.app_id = f"it-{uuid.uuid4().hex[:8]}"
        topics = {}
        if own_topics:
            # Topics of its own, so that no other worker of the session reads its events.
            topics = {f"NURTURE_TOPICS_{name.upper()}": f"{self.app_id}.{name}"
                      for name in ("click", "open", "form", "feedback", "commands", "deadletter", "consent",
                                   "requests", "receipts")}
        self.env = {
            **os.environ,
            "NURTURE_BROKER": broker,
            "NURTURE_WORKER_APP_ID": self.app_id,
            "NURTURE_WORKER_DATA_DIR": str(directory / "data"),
            "NURTURE_WORKER_MODEL_DIR": str(model_dir),
            "NURTURE_WORKER_WEB_PORT": str(free_port()),
            "NURTURE_LOG_FORMAT": "json",
            "NURTURE_PRIVACY_KEYS": TEST_KEYS,
            "NURTURE_PRIVACY_AUDIT_LOG": str(directory / "audit.log"),
            "NURTURE_PRIVACY_EXPORT_DIR": str(directory / "exports"),
            # No journeys, caps or quiet hours unless a test sets its own file, so that
            # commands equal those of an offline run at any time of day.
            "NURTURE_WORKER_JOURNEYS_FILE": str(Path(__file__).with_name("no_journeys.toml")),
            **topics,
            **extra_env,
        }
        self.settings = load_settings(environ=self.env)
        self.log_path = directory / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def create_topics(self) -> None:
        subprocess.run([str(Path(sys.executable).with_name("nurture")), "topics", "create"],
                       env=self.env, check=True, capture_output=True, cwd=self.directory)

    def start(self) -> None:
        executable = Path(sys.executable).with_name("nurture")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(executable), "worker", "-l", "info",
                 "--web-port", self.env["NURTURE_WORKER_WEB_PORT"]],
                env=self.env, cwd=self.directory, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def replacement(self, directory: Path) -> "Worker":
        """Return a worker of the same app and topics with empty local state, not started."""
        clone = copy.copy(self)
        directory.mkdir(parents=True, exist_ok=True)
        clone.directory = directory
        clone.env = {**self.env, "NURTURE_WORKER_DATA_DIR": str(directory / "data"),
                     "NURTURE_PRIVACY_EXPORT_DIR": str(directory / "exports"),
                     "NURTURE_WORKER_WEB_PORT": str(free_port())}
        clone.settings = load_settings(environ=clone.env)
        clone.log_path = directory / "worker.log"
        clone.process = None
        return clone

    def kill(self) -> None:
        """End the process with SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


@pytest.fixture(scope="session")
def worker(broker: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the session; events on the open topic are Avro, the rest JSON."""
    directory = tmp_path_factory.mktemp("worker")
    running = Worker(directory, broker, model_dir, {"NURTURE_CODECS_OPEN": "avro"})
    running.create_topics()
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def producer(broker: str) -> Iterator[KafkaProducer]:
    client = connect(load_settings(environ={"NURTURE_BROKER": broker}), KafkaProducer, acks="all")
    yield client
    client.close()


def read_until(settings: Settings, topic: str, done: Callable[[list[Any]], bool],
               timeout_seconds: float = 90.0, worker: Worker | None = None) -> list[Any]:
    """Read ``topic`` from the start until ``done(records)`` is true or time runs out."""
    consumer = connect(settings, KafkaConsumer, group_id=None, enable_auto_commit=False,
                       isolation_level="read_committed")
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if done(records):
                return records
            if worker is not None and worker.process is not None and worker.process.poll() is not None:
                raise AssertionError(f"the worker exited:\n{worker.log_tail()}")
        tail = worker.log_tail() if worker is not None else ""
        raise AssertionError(f"timed out reading {topic}; got {len(records)} records\n{tail}")
    finally:
        consumer.close()


def send_event(producer: KafkaProducer, settings: Settings, event: Any) -> Any:
    """Produce ``event`` with its topic's codec and wait for the broker's acknowledgement."""
    codec = settings.codecs.for_kind(event.kind)
    topic = settings.topics.consent if event.kind == "consent" else settings.topics.event_topic(event.kind)
    future = producer.send(topic, key=event.lead_id.encode(),
                           value=encode_event(event, codec))
    producer.flush()
    return future.get(timeout=30)


def commands_for(records: list[Any], leads: set[str]) -> list[dict[str, Any]]:
    commands = [orjson.loads(record.value) for record in records]
    return [command for command in commands if command["lead_id"] in leads]
