"""Consent, the ledger, erasure, export and the admin API on the real broker, with a worker of their own."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import Worker, commands_for, read_until, send_event
from factories import BOXES, consent, form, open_
from nurture.streams import endpoints
from nurture.streams.privacy_io import ledger_topic

TOKEN = "privacy-test-token"
NURTURE = str(Path(sys.executable).with_name("nurture"))


@pytest.fixture(scope="module")
def own(broker: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    worker = Worker(tmp_path_factory.mktemp("privacy"), broker, model_dir,
                    {"NURTURE_API_TOKENS": f"dpo={TOKEN}"}, own_topics=True)
    worker.create_topics()
    worker.start()
    yield worker
    worker.stop()


def _cli(worker: Worker, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NURTURE, *args], env=worker.env, cwd=worker.directory, capture_output=True,
                          text=True, timeout=120, check=check)


def _wait(predicate: Any, worker: Worker, what: str, seconds: float = 90.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert worker.process.poll() is None, worker.log_tail()
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{worker.log_tail()}")


def _row(worker: Worker, lead: str) -> dict[str, Any] | None:
    result = _cli(worker, "journeys", "show", lead, "--json", check=False)
    return orjson.loads(result.stdout) if result.returncode == 0 and result.stdout.strip() else None


def _events_seen(worker: Worker, lead: str) -> int:
    row = _row(worker, lead)
    return row["features"]["events"] if row else 0


def _now() -> int:
    return time.time_ns() // 1_000_000 - 60_000


def test_withdrawal_between_two_events_stops_what_follows(own: Worker, producer: KafkaProducer) -> None:
    lead = f"consent-{uuid.uuid4().hex[:8]}"
    settings = own.settings
    start = _now()
    send_event(producer, settings, form(lead, start, fields={"email": f"{lead}@example.com"}, consents=BOXES))
    records = read_until(settings, settings.topics.commands, lambda rs: commands_for(rs, {lead}), worker=own)
    assert [c["template"] for c in commands_for(records, {lead})] == ["welcome"]

    send_event(producer, settings, consent(lead, start + 1000, granted=False, source="preference_centre"))
    _wait(lambda: any(not e["granted"] for e in _history(own, lead)), own, "the withdrawal in the ledger")
    send_event(producer, settings, open_(lead, start + 2000, template="welcome"))  # would send the next content
    _wait(lambda: _events_seen(own, lead) == 2, own, "the open in the lead row")

    records = read_until(settings, settings.topics.commands, lambda rs: True, worker=own)
    assert [c["template"] for c in commands_for(records, {lead})] == ["welcome"]
    history = _history(own, lead)
    assert [(e["channel"], e["granted"], e["source"]) for e in history][-1] == ("email", False, "preference_centre")


def _history(worker: Worker, lead: str) -> list[dict[str, Any]]:
    lines = _cli(worker, "consent", "history", lead, "--json").stdout.splitlines()
    return [orjson.loads(line) for line in lines]


def test_export_returns_everything_held(own: Worker, producer: KafkaProducer) -> None:
    lead = f"export-{uuid.uuid4().hex[:8]}"
    profile = {"email": f"{lead}@example.com", "first_name": "Łucja"}
    send_event(producer, own.settings, form(lead, _now(), fields=profile, consents=BOXES))
    _wait(lambda: _events_seen(own, lead) == 1, own, "the form in the lead row")

    document = orjson.loads(_cli(own, "privacy", "export", lead).stdout)
    assert document["profile"]["email"] == profile["email"]
    assert document["profile"]["first_name"] == "Łucja"
    assert {(e["channel"], e["granted"]) for e in document["consent_history"]} >= {("email", True), ("phone", True)}
    assert document["features"]["events"] == 1
    assert document["score"] is not None
    assert [c[1] for c in document["commands_issued"].values()] == ["email"]


def test_erasure_leaves_nothing_readable(own: Worker, producer: KafkaProducer) -> None:
    lead = f"erase-{uuid.uuid4().hex[:8]}"
    email, name = f"{lead}.ewa@example.com", f"Żaneta{uuid.uuid4().hex[:6]}"
    signup = form(lead, _now(), fields={"email": email, "first_name": name}, consents=BOXES)
    send_event(producer, own.settings, signup)
    read_until(own.settings, own.settings.topics.commands, lambda rs: commands_for(rs, {lead}), worker=own)

    receipt = orjson.loads(_cli(own, "privacy", "erase", lead, "--by", "dpo").stdout)
    assert receipt["status"] == "erased"
    assert receipt["requested_by"] == "dpo"
    assert _row(own, lead) is None

    secrets = (email.encode(), name.encode())
    for path in (own.directory / "data").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(secret in content for secret in secrets), path
    assert not any(secret in own.log_path.read_bytes() for secret in secrets)
    checked = _search_topics(own, secrets, skip=set(receipt["remaining"]))
    assert {ledger_topic(own.settings), own.settings.erasures_topic} <= checked
    assert own.settings.topics.form in receipt["remaining"]
    assert own.settings.topics.commands in receipt["remaining"]

    # Replaying the lead's events from the start does not bring it back.
    send_event(producer, own.settings, signup)
    send_event(producer, own.settings, open_(lead, signup.event_time + 1000, template="welcome"))
    _wait(lambda: _metric(own, 'nurture_records_skipped_total{reason="erased_lead"}') >= 2, own, "skipped events")
    assert _row(own, lead) is None
    left = orjson.loads(_cli(own, "privacy", "export", lead).stdout)
    assert left["profile"] is None
    assert left["consent_history"]
    assert email not in str(left)


def _search_topics(worker: Worker, secrets: tuple[bytes, ...], skip: set[str]) -> set[str]:
    """Read every topic of the broker but ``skip`` and fail on any record holding a secret."""
    consumer = KafkaConsumer(bootstrap_servers=worker.settings.bootstrap_servers, group_id=None,
                             enable_auto_commit=False)
    checked = set()
    try:
        for topic in sorted(consumer.topics()):
            if topic in skip or topic.startswith("__"):
                continue
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            while any(consumer.position(tp) < end for tp, end in ends.items()):
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        blob = b"".join([record.key or b"", record.value or b"",
                                         *(value for _, value in record.headers or [])])
                        assert not any(secret in blob for secret in secrets), (topic, record.offset)
            checked.add(topic)
    finally:
        consumer.close()
    return checked


def _metric(worker: Worker, name: str) -> float:
    status, body = _get(worker, endpoints.METRICS, token=None)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _get(worker: Worker, path: str, token: str | None = TOKEN, method: str = "GET",
         body: bytes | None = None) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{worker.env['NURTURE_WORKER_WEB_PORT']}{path}"
    request = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_admin_api_needs_token_checks_input_and_audits(own: Worker, producer: KafkaProducer) -> None:
    lead = f"api-{uuid.uuid4().hex[:8]}"
    send_event(producer, own.settings, form(lead, _now(), fields={"email": f"{lead}@example.com"}, consents=BOXES))
    _wait(lambda: _events_seen(own, lead) == 1, own, "the form in the lead row")
    export = endpoints.API_LEAD_EXPORT.format(lead_id=lead)

    assert _get(own, export, token=None)[0] == 401
    assert _get(own, export, token="wrong")[0] == 403
    status, body = _get(own, export)
    assert status == 200
    assert orjson.loads(body)["profile"]["email"] == f"{lead}@example.com"
    status, body = _get(own, endpoints.API_LEAD_CONSENT.format(lead_id=lead))
    assert status == 200
    assert orjson.loads(body)["consent"]["email"]["marketing"]["granted"] is True
    status, body = _get(own, endpoints.API_LEAD.format(lead_id="bad%07id"))
    assert status == 400
    assert b"non-printable" in body
    erase = endpoints.API_LEAD_ERASE.format(lead_id=lead)
    status, body = _get(own, erase, method="POST", body=b"not json")
    assert status == 400
    assert b"not JSON" in body
    status, body = _get(own, erase, method="POST", body=b"")
    assert status == 202
    request_id = orjson.loads(body)["request_id"]
    _wait(lambda: _row(own, lead) is None, own, "the erasure")

    audit = [orjson.loads(line) for line in (own.directory / "audit.log").read_bytes().splitlines()]
    mine = [(e["who"], e["action"], e["status"]) for e in audit if e["lead_id"] in (lead, "bad\x07id")]
    assert mine == [("unauthenticated", "export", 401), ("unauthenticated", "export", 403), ("dpo", "export", 200),
                    ("dpo", "consent", 200), ("dpo", "lookup", 400), ("dpo", "erase", 400), ("dpo", "erase", 202)]
    assert [e["request_id"] for e in audit if e["status"] == 202 and e["lead_id"] == lead] == [request_id]
    assert all(isinstance(e["at"], int) for e in audit)
    assert f"{lead}@example.com".encode() not in (own.directory / "audit.log").read_bytes()


def test_ledger_verify_names_the_changed_entry(own: Worker, producer: KafkaProducer) -> None:
    result = _cli(own, "consent", "verify")
    assert "consent ledger intact" in result.stdout
    topic = ledger_topic(own.settings)
    consumer = KafkaConsumer(bootstrap_servers=own.settings.bootstrap_servers, group_id=None)
    try:
        entries = _entries(consumer, topic)
    finally:
        consumer.close()
    key, value, partition = entries[len(entries) // 2]
    entry = orjson.loads(value)
    changed = {**entry, "granted": not entry["granted"]}
    producer.send(topic, key=key, value=orjson.dumps(changed), partition=partition).get(timeout=30)

    broken = _cli(own, "consent", "verify", check=False)
    assert broken.returncode == 1
    assert f"partition {partition}, entry {entry['seq']}: changed" in broken.stderr

    producer.send(topic, key=key, value=value, partition=partition).get(timeout=30)
    assert _cli(own, "consent", "verify").returncode == 0


def _entries(consumer: KafkaConsumer, topic: str) -> list[tuple[bytes, bytes, int]]:
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    found = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for tp, records in consumer.poll(timeout_ms=1000).items():
            found.extend((r.key, r.value, tp.partition) for r in records if r.key.startswith(b"e") and r.value)
    assert found, f"no ledger entries in {topic}"
    return found
