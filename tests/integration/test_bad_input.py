"""Bad input at scale and text in many scripts, through a real worker and broker.

The module's worker reads clicks as JSON and opens and forms as Avro; the
session's worker reads forms as JSON.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from conftest import Worker, commands_for, read_until
from factories import DAY_MS, T0
from lead_inputs import FAULTS, expected_reason, lead_events, malformed
from nurture.agents.state import decode_lead, has_seen
from nurture.streams.codecs import encode_event
from nurture.streams.leads import changelog_topic

MALFORMED = 10_000
VALID_LEADS = 400
NAMES = (
    "Zoë Łucja",
    "Grzegorz Brzęczyszczykiewicz",
    "Żaneta Ćwikła-Ślęzak",
    "Ola 👩‍💻",  # woman technologist: woman, zero-width joiner, laptop
    "Noe\u0308 Zoe\u0301",  # e + combining diaeresis, e + combining acute (not composed)
    "Александра",
    "Σοφία",
    "محمد",
    "שרה",
    "美咲 𠮷",
    "देवनागरी",
    "Kim 👍🏽 🇵🇱",
    "Ａｎｎａ\u200d",
)


@pytest.fixture(scope="module")
def mixed_worker(broker: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    directory = tmp_path_factory.mktemp("bad-input")
    running = Worker(directory, broker, model_dir,
                     {"NURTURE_CODECS_OPEN": "avro", "NURTURE_CODECS_FORM": "avro"}, own_topics=True)
    running.create_topics()
    running.start()
    yield running
    running.stop()


def test_malformed_records_at_scale(mixed_worker, producer) -> None:
    settings = mixed_worker.settings
    run = uuid.uuid4().hex[:6]
    leads = [f"lead-{run}-{number}" for number in range(VALID_LEADS)]
    valid = [event for number, lead in enumerate(leads)
             for event in lead_events(lead, T0 + number * 60_000, NAMES[number % len(NAMES)])]
    bad = []
    for serial in range(MALFORMED):
        fault = FAULTS[serial % len(FAULTS)]
        kind = ("click", "open", "form")[(serial // len(FAULTS)) % 3]
        codec = settings.codecs.for_kind(kind)
        key, value = malformed(fault, kind, codec, leads[serial % VALID_LEADS], T0, serial)
        bad.append((settings.topics.event_topic(kind), key, value, expected_reason(fault, codec)))
    records = [("valid", event) for event in valid] + [("bad", item) for item in bad]
    random.Random(7).shuffle(records)

    started = time.monotonic()
    origins = _produce(producer, settings, records)
    letters = read_until(settings, settings.topics.deadletter, lambda rs: len(rs) >= MALFORMED,
                         timeout_seconds=100, worker=mixed_worker)
    rows = _wait_for_rows(settings, valid, mixed_worker)
    elapsed = time.monotonic() - started

    assert mixed_worker.process.poll() is None, mixed_worker.log_tail()
    assert len(letters) == MALFORMED
    got = {_origin(record): record for record in letters}
    assert set(got) == set(origins)
    reasons = Counter(_headers(record)["nurture.reason"] for record in letters)
    assert reasons == Counter(reason for _, _, _, reason in bad)
    for origin, (_, key, value, reason) in origins.items():
        record = got[origin]
        assert (_headers(record)["nurture.reason"], record.key, record.value) == (reason, key, value)
        assert _headers(record)["nurture.error"]
    for event in valid:
        assert has_seen(rows[event.lead_id], event.event_id)
    commands = read_until(settings, settings.topics.commands,
                          lambda rs: len(_welcomes(rs, leads)) >= VALID_LEADS, worker=mixed_worker)
    assert sorted(_welcomes(commands, leads)) == sorted(leads)
    print(f"{MALFORMED} malformed and {len(valid)} valid records handled in {elapsed:.1f} s")


def test_names_in_many_scripts_reach_commands_unchanged(mixed_worker, worker, producer) -> None:
    """Forms with names in many scripts, as Avro (module worker) and JSON (session worker)."""
    for running in (mixed_worker, worker):
        settings = running.settings
        assert settings.codecs.for_kind("form") == ("avro" if running is mixed_worker else "json")
        names = {f"name-{uuid.uuid4().hex[:8]}": name for name in NAMES}
        events = [event for number, (lead, name) in enumerate(names.items())
                  for event in lead_events(lead, T0 + number * DAY_MS, name)]
        _produce(producer, settings, [("valid", event) for event in events])
        records = read_until(settings, settings.topics.commands,
                             lambda rs: len(_welcomes(rs, list(names))) >= len(names), worker=running)
        raw = [record.value for record in records if orjson.loads(record.value)["lead_id"] in names]
        assert len(raw) >= len(names)
        for value in raw:
            command = orjson.loads(value)
            sent = names[command["lead_id"]].encode("utf-8")
            assert command["personalisation"]["first_name"].encode("utf-8") == sent, command["lead_id"]
            assert b'"first_name":"' + sent + b'"' in value


def _produce(producer, settings, records: list[tuple[str, Any]]) -> dict[tuple[str, int, int], Any]:
    """Send valid events and malformed records in order; return the malformed ones by origin."""
    futures = []
    for label, item in records:
        if label == "valid":
            codec = settings.codecs.for_kind(item.kind)
            producer.send(settings.topics.event_topic(item.kind), key=item.lead_id.encode(),
                          value=encode_event(item, codec))
        else:
            topic, key, value, _ = item
            futures.append((producer.send(topic, key=key, value=value), item))
    producer.flush()
    origins = {}
    for future, item in futures:
        metadata = future.get(timeout=30)
        origins[(metadata.topic, metadata.partition, metadata.offset)] = item
    return origins


def _wait_for_rows(settings, valid, running, timeout_seconds: float = 90.0) -> dict[str, dict[str, Any]]:
    """Read the lead table's changelog until every valid event id is in its lead's row."""
    expected: dict[str, set[str]] = {}
    for event in valid:
        expected.setdefault(event.lead_id, set()).add(event.event_id)
    rows: dict[str, dict[str, Any]] = {}
    read_so_far = [0]

    def done(records: list[Any]) -> bool:
        for record in records[read_so_far[0]:]:
            lead_id = record.key.decode()
            if lead_id in expected and record.value is not None:
                rows[lead_id] = decode_lead(record.value, lead_id, None)
        read_so_far[0] = len(records)
        return all(lead in rows and all(has_seen(rows[lead], event_id) for event_id in ids)
                   for lead, ids in expected.items())

    read_until(settings, changelog_topic(settings), done, timeout_seconds=timeout_seconds, worker=running)
    return rows


def _welcomes(records: list[Any], leads: list[str]) -> list[str]:
    return [c["lead_id"] for c in commands_for(records, set(leads)) if c["rule"] == "welcome"]


def _origin(record) -> tuple[str, int, int]:
    headers = _headers(record)
    return (headers["nurture.source.topic"], int(headers["nurture.source.partition"]),
            int(headers["nurture.source.offset"]))


def _headers(record) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers or []}
