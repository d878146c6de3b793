"""How partitions bound the useful workers, and how adding partitions checks placement and moves lead rows."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewPartitions

from conftest import Worker, read_until, send_event
from factories import BOXES, DAY_MS, T0, form
from nurture.agents.state import decode_lead, has_seen
from nurture.config.settings import load_settings
from nurture.streams.leads import changelog_topic
from nurture.streams.repartition import partition_for
from nurture.streams.report import read_topic
from nurture.streams.topics import changelog_topics

LEADS = 30


def test_rows_follow_their_leads_to_new_partitions(broker, model_dir, tmp_path, producer) -> None:
    (tmp_path / "two").mkdir()
    first = Worker(tmp_path / "two", broker, model_dir, {"NURTURE_KAFKA_PARTITIONS": "2"}, own_topics=True)
    first.create_topics()
    first.start()
    leads = [f"grow-{uuid.uuid4().hex[:6]}-{number}" for number in range(LEADS)]
    for lead in leads:
        send_event(producer, first.settings, _signup(lead, T0))
    _wait_for_rows(first, {lead: f"f-{lead}-{T0}-signup" for lead in leads})
    busy = _nurture(first.env, "topics", "repartition", "--partitions", "4")
    first.stop()

    assert busy.returncode != 0
    assert "stop every worker" in busy.stderr

    four = {**first.env, "NURTURE_KAFKA_PARTITIONS": "4"}
    _grow_by_hand(first, 4)  # what an operator might do with kafka-topics.sh --alter
    refused = _nurture(four, "topics", "create")
    moved = sum(partition_for(lead.encode(), 2) != partition_for(lead.encode(), 4) for lead in leads)

    assert refused.returncode != 0
    assert "on the wrong partition" in refused.stderr
    assert "nurture topics repartition --partitions 4" in refused.stderr

    result = _nurture(first.env, "topics", "repartition", "--partitions", "4")

    assert result.returncode == 0, result.stderr
    assert f"moved {moved} rows of {changelog_topic(first.settings)}" in result.stdout
    assert _nurture(four, "topics", "create").returncode == 0

    second = first.replacement(tmp_path / "four")
    second.env = four
    second.settings = load_settings(environ=four)
    second.start()
    # A producer that started before the repartition keeps the old count until its metadata
    # refresh (metadata.max.age.ms), so the procedure restarts producers; here, a new one.
    restarted = KafkaProducer(bootstrap_servers=second.settings.bootstrap_servers, acks="all")
    try:
        for lead in leads:
            send_event(restarted, second.settings, _signup(lead, T0 + DAY_MS, name="contact"))
        _wait_for_rows(second, {lead: f"f-{lead}-{T0 + DAY_MS}-contact" for lead in leads})
    finally:
        restarted.close()
        second.stop()
    welcomes = Counter(record.key.decode() for record in read_topic(second.settings, second.settings.topics.commands)
                       if b'"rule":"welcome"' in record.value)
    assert moved > 0
    assert welcomes == Counter({lead: 1 for lead in leads})


def test_worker_beyond_partition_count_warns(broker, model_dir, tmp_path) -> None:
    (tmp_path / "first").mkdir()
    first = Worker(tmp_path / "first", broker, model_dir, {"NURTURE_KAFKA_PARTITIONS": "1"}, own_topics=True)
    second = first.replacement(tmp_path / "second")
    first.create_topics()
    first.start()
    try:
        _wait_for_assignments([first], [0])
        offset = len(first.log_text())  # the first worker's lines from before the second joins
        second.start()
        latest = _wait_for_assignments([first, second], [offset, 0])
    finally:
        second.stop()
        first.stop()

    assert sorted(entry["event"] for entry in latest) == ["input_partitions_assigned", "no_input_partitions"]
    idle = next(entry for entry in latest if entry["event"] == "no_input_partitions")
    busy = next(entry for entry in latest if entry["event"] == "input_partitions_assigned")
    assert busy["partitions"] == [0]
    assert "more workers than its input topics have partitions (1)" in idle["hint"]


def _wait_for_assignments(workers: list[Worker], offsets: list[int], timeout_seconds: float = 90.0) -> list[dict]:
    """Wait until each worker has logged an assignment past its log offset, all of different kinds.

    Return each worker's latest assignment line.
    """
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        latest = [_latest_assignment(worker.log_text()[offset:]) for worker, offset in zip(workers, offsets)]
        if all(latest) and len({entry["event"] for entry in latest}) == len(workers):
            return latest
        time.sleep(0.5)
    tails = "\n".join(worker.log_tail() for worker in workers)
    raise AssertionError(f"timed out waiting for an assignment line from each worker:\n{tails}")


def _latest_assignment(log_text: str) -> dict | None:
    found = None
    for line in log_text.splitlines():
        if '"input_partitions_assigned"' in line or '"no_input_partitions"' in line:
            found = orjson.loads(line[line.index("{"):])
    return found


def _signup(lead: str, at: int, name: str = "signup"):
    return form(lead, at, name, fields={"email": f"{lead}@example.com", "first_name": "Ala"}, consents=BOXES)


def _nurture(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("nurture")
    return subprocess.run([str(executable), *args], env=env, capture_output=True, text=True, timeout=120)


def _grow_by_hand(worker: Worker, partitions: int) -> None:
    settings = worker.settings
    names = [*settings.topics.keyed_by_lead(), settings.timers_topic, *changelog_topics(settings)]
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    try:
        admin.create_partitions({name: NewPartitions(partitions) for name in names})
    finally:
        admin.close()


def _wait_for_rows(worker: Worker, event_ids: dict[str, str]) -> None:
    """Read the lead changelog until each lead's latest row has seen its event, on its partition."""
    count = worker.settings.kafka.partitions
    missing: list[str] = []

    def done(records) -> bool:
        latest = {}
        for record in records:
            if record.key.decode() in event_ids:
                latest[record.key.decode()] = record
        missing[:] = [lead for lead in event_ids if lead not in latest or not _has_seen(
            latest[lead], event_ids[lead], count)]
        return not missing

    try:
        read_until(worker.settings, changelog_topic(worker.settings), done, worker=worker)
    except AssertionError as error:
        where = {lead: partition_for(lead.encode(), count) for lead in missing}
        raise AssertionError(f"leads without their event (lead: partition): {where}\n{error}") from None


def _has_seen(record, event_id: str, count: int) -> bool:
    return (record.value is not None and record.partition == partition_for(record.key, count)
            and has_seen(decode_lead(record.value, record.key.decode(), None), event_id))
