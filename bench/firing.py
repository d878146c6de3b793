"""How long a due journey wait takes to become a command on the topic, on a real worker.

Used by bench/timers.py --firing N; needs NURTURE_BROKER. It trains a small model,
starts `nurture worker` with a clock file and its own topics, puts N leads into a
one-minute wait, then moves the clock past the due time and reads the commands.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from nurture.agents.privacy.keys import keygen_text

PROJECT = Path(__file__).resolve().parents[1]
JOURNEY = """
[policy]
time_zone = "UTC"

[[journeys]]
name = "bench"
trigger = { on = "event", kinds = ["form"], where = { form = "bench" } }

[[journeys.steps]]
id = "first"
send = { channel = "email", template = "first" }

[[journeys.steps]]
id = "pause"
wait = { duration = "1m" }

[[journeys.steps]]
id = "second"
send = { channel = "email", template = "second" }
"""


# The form's consent box: without it the consent gate drops every email.
EMAIL_CONSENT = {"channel": "email", "purpose": "marketing", "granted": True, "text_version": "bench"}


def firing_delays(leads: int) -> list[float]:
    """Return, per lead, the ms from the clock move to its second command's broker timestamp."""
    broker = os.environ.get("NURTURE_BROKER")
    if not broker:
        raise SystemExit("--firing needs NURTURE_BROKER; run it under scripts/with-kafka.sh")
    directory = Path(tempfile.mkdtemp(prefix="nurture-firing-"))
    nurture = str(Path(sys.executable).with_name("nurture"))
    app_id = f"bench-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "NURTURE_WORKER_APP_ID": app_id, "NURTURE_LOG_LEVEL": "warning",
           "NURTURE_WORKER_DATA_DIR": str(directory / "data"), "NURTURE_WORKER_MODEL_DIR": str(directory / "model"),
           "NURTURE_WORKER_JOURNEYS_FILE": str(directory / "journeys.toml"),
           "NURTURE_WORKER_CLOCK_FILE": str(directory / "clock"), "NURTURE_WORKER_WEB_PORT": str(_free_port()),
           "NURTURE_PRIVACY_KEYS": keygen_text(), "NURTURE_PRIVACY_EXPORT_DIR": str(directory / "exports"),
           "NURTURE_PRIVACY_AUDIT_LOG": str(directory / "audit.log"),
           **{f"NURTURE_TOPICS_{name.upper()}": f"{app_id}.{name}"
              for name in ("click", "open", "form", "feedback", "commands", "deadletter", "consent", "requests",
                           "receipts")}}
    (directory / "journeys.toml").write_text(JOURNEY)
    start_ms = int(time.time() * 1000)
    _set_clock(directory / "clock", start_ms)
    worker = None
    try:
        _progress("training a small model")
        subprocess.run([nurture, "train", "--history", str(PROJECT / "data/ecom-clickstream/ecom.csv.gz"),
                        "--out", str(directory / "model"), "--rounds", "30"], env=env, check=True,
                       capture_output=True)
        subprocess.run([nurture, "topics", "create"], env=env, check=True, capture_output=True)
        with (directory / "worker.log").open("wb") as log:
            worker = subprocess.Popen([nurture, "worker", "-l", "warn"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        from kafka import KafkaConsumer, KafkaProducer

        from nurture.config.settings import load_settings
        from nurture.streams.kafka_clients import connect

        settings = load_settings(environ=env)  # the worker's, so also its TLS and SASL settings
        producer = connect(settings, KafkaProducer, acks="all")
        _progress(f"sending {leads} forms")
        for number in range(leads):
            lead_id = f"{app_id}-{number}"
            record = {"event_id": f"{lead_id}-form", "lead_id": lead_id, "event_time": start_ms,
                      "produced_at": start_ms, "form": "bench", "fields": {"email": "bench@example.com"},
                      "consents": [EMAIL_CONSENT]}
            producer.send(f"{app_id}.form", key=lead_id.encode(), value=orjson.dumps(record))
        producer.flush()
        consumer = connect(settings, KafkaConsumer, auto_offset_reset="earliest", group_id=None,
                           isolation_level="read_committed")
        consumer.subscribe([settings.topics.commands])
        _read(consumer, "first", leads, worker)
        moved_ms = int(time.time() * 1000)
        _set_clock(directory / "clock", start_ms + 61_000)
        _progress("clock moved past the due time")
        seconds = _read(consumer, "second", leads, worker)
        return [timestamp - moved_ms for timestamp in seconds]
    except SystemExit:
        log_tail = (directory / "worker.log").read_text(errors="replace").splitlines()[-20:]
        print("\n".join(log_tail), file=sys.stderr)
        raise
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


def _read(consumer, step: str, count: int, worker: subprocess.Popen) -> list[int]:
    """Return the broker timestamps of ``count`` commands of ``step``."""
    stamps: list[int] = []
    deadline = time.monotonic() + 180
    while len(stamps) < count:
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(f"only {len(stamps)} of {count} {step} commands arrived")
        for records in consumer.poll(timeout_ms=500).values():
            stamps.extend(r.timestamp for r in records if orjson.loads(r.value)["step"] == step)
    _progress(f"{len(stamps)} {step} commands read")
    return stamps


def _set_clock(path: Path, now_ms: int) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(str(now_ms))
    temporary.replace(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _progress(message: str) -> None:
    print(f"[firing] {message}", file=sys.stderr, flush=True)
