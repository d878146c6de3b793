"""Parts the broker benchmarks share: the events, topics, producing, a worker process, results.

Every contender reads the same events, built by ``bench_events`` from the bundled
clickstream: copies of it with their own lead and event ids, moved in time so
that the latest event lies at ``end_ms``. Whatever a lead needs before it may
receive commands (a consent grant, say) belongs in that one function.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterable

import orjson

PROJECT = Path(__file__).resolve().parents[1]
CLICKSTREAM = PROJECT / "data" / "ecom-clickstream" / "ecom.csv.gz"
RESULTS = PROJECT / "var" / "bench" / "results"
EVENT_KINDS = ("click", "open", "form")
PARTITIONS = 6


def progress(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", file=sys.stderr, flush=True)


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that the benchmark stops the processes it started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def broker() -> str:
    value = os.environ.get("KAFKA_BOOTSTRAP")
    if not value:
        raise SystemExit("this benchmark needs a broker; run it under scripts/with-kafka.sh")
    return value


def bench_events(count: int, end_ms: int, tag: str = "c") -> list[tuple[str, dict[str, Any]]]:
    """Return ``count`` (kind, record) pairs in time order: the clickstream, copied as often as needed.

    Copy n of a lead is named LEAD-{tag}{n}, so another ``tag`` gives leads of their own.
    """
    from nurture.streams.history import read_events

    # Forms carry their consent boxes; the few later withdrawals on events.consent are left
    # out, because the plain Faust and Quix contenders read the three event topics only.
    history = [event for event in read_events(CLICKSTREAM) if event.kind in EVENT_KINDS]
    shift = end_ms - history[-1].event_time
    events: list[tuple[str, dict[str, Any]]] = []
    copy = 0
    while len(events) < count:
        for event in history[: count - len(events)]:
            record = event.to_record()
            record["lead_id"] = f"{event.lead_id}-{tag}{copy}"
            record["event_id"] = f"{event.event_id}-{tag}{copy}"
            record["event_time"] = event.event_time + shift
            record["produced_at"] = record["event_time"]
            events.append((event.kind, record))
        copy += 1
    events.sort(key=lambda pair: pair[1]["event_time"])
    return events


_KEYS: list[str] = []


def bench_keys() -> str:
    """Return the key ring of the benchmark's workers, made once per run."""
    from nurture.agents.privacy.keys import keygen_text

    if not _KEYS:
        _KEYS.append(keygen_text())
    return _KEYS[0]


def create_topics(names: Iterable[str], partitions: int = PARTITIONS, compact: bool = False) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker())
    try:
        config = {"cleanup.policy": "compact"} if compact else {}
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config) for name in names])
    finally:
        admin.close()


async def produce(records: Iterable[tuple[str, bytes, bytes]], tag: str, total: int) -> float:
    """Produce (topic, key, value) records with the default (murmur2) partitioner; return seconds."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=broker(), acks="all", linger_ms=20,
                                max_batch_size=262_144, max_request_size=4_194_304)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for number, (topic, key, value) in enumerate(records, 1):
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
                progress(tag, f"produced {number:,} of {total:,}")
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def event_records(events: list[tuple[str, dict[str, Any]]], prefix: str) -> Iterable[tuple[str, bytes, bytes]]:
    for kind, record in events:
        yield f"{prefix}.{kind}", record["lead_id"].encode(), orjson.dumps(record)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def journeys_without_quiet_hours(directory: Path) -> Path:
    """Write the default journeys without quiet hours, so that commands leave at any time of day."""
    text = (PROJECT / "config" / "journeys.toml").read_text()
    path = directory / "journeys.toml"
    path.write_text(re.sub(r"(?m)^quiet_hours\s*=.*$", "", text))
    return path


class Worker:
    """A `nurture worker` process with its own app id, topics, data directory and web port."""

    def __init__(self, directory: Path, app_id: str, prefix: str, model_dir: Path, log_name: str = "worker.log"):
        self.directory = directory
        self.port = free_port()
        self.log = directory / log_name
        self.env = {**os.environ, "NURTURE_BROKER": f"kafka://{broker()}", "NURTURE_WORKER_APP_ID": app_id,
                    "NURTURE_WORKER_DATA_DIR": str(directory / "data"), "NURTURE_WORKER_MODEL_DIR": str(model_dir),
                    "NURTURE_WORKER_WEB_PORT": str(self.port), "NURTURE_LOG_LEVEL": "warning",
                    "NURTURE_LOG_FORMAT": "json",
                    "NURTURE_PRIVACY_KEYS": bench_keys(),
                    "NURTURE_PRIVACY_EXPORT_DIR": str(directory / "exports"),
                    "NURTURE_PRIVACY_AUDIT_LOG": str(directory / "audit.log"),
                    "NURTURE_WORKER_JOURNEYS_FILE": str(journeys_without_quiet_hours(directory)),
                    **{f"NURTURE_TOPICS_{kind.upper()}": f"{prefix}.{kind}" for kind in EVENT_KINDS},
                    **{f"NURTURE_TOPICS_{name.upper()}": f"{prefix}.{app_id}.{name}"
                       for name in ("feedback", "commands", "deadletter")}}
        self.process: subprocess.Popen[bytes] | None = None

    def create_topics(self) -> None:
        subprocess.run([nurture(), "topics", "create"], env=self.env, check=True, capture_output=True)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([nurture(), "worker", "-l", "warn"], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return response.read()

    def records_in(self, topics: Iterable[str]) -> float:
        """The worker's nurture_records_total over ``topics``, or 0 before its web server responds."""
        samples = self.samples()
        return sum(samples.get(f'nurture_records_total{{topic="{topic}"}}', 0.0) for topic in topics)

    def samples(self) -> dict[str, float]:
        """Return every sample on the worker's /metrics by name and labels, or none before its web server responds."""
        try:
            text = self.get("/metrics").decode()
        except OSError:
            return {}
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    def ready(self) -> bool:
        try:
            return json.loads(self.get("/nurture/health/ready")).get("ready") is True
        except OSError:
            return False

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise SystemExit("the worker stopped:\n" + "\n".join(tail))

    def rss_bytes(self) -> int:
        return rss_bytes(self.process.pid) if self.process else 0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid) if self.process else 0.0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def nurture() -> str:
    return str(Path(sys.executable).with_name("nurture"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time ``pid`` has used, its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def train_model(directory: Path) -> Path:
    """Train the model every contender uses (`nurture train` on the clickstream), once per run."""
    model_dir = directory / "model"
    if not (model_dir / "card.json").exists():
        progress("bench", "training the model")
        subprocess.run([nurture(), "train", "--history", str(CLICKSTREAM), "--out", str(model_dir)],
                       check=True, capture_output=True)
    return model_dir


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"platform": platform.platform(), "cores": os.cpu_count(), "python": platform.python_version(),
            "load_before": [round(value, 2) for value in load]}


def write_result(path: str, summary: dict[str, Any]) -> None:
    """Write a contender's summary whole: to a temporary name first, then renamed."""
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(summary))
    temporary.replace(path)


def save(name: str, result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({**result, "machine": machine()}, indent=1))
