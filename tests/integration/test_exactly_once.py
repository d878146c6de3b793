"""Exactly-once from event to command under faults: a killed worker, a restarted broker.

Each test runs a group of real workers under a steady event load and injects a
fault mid-load. Then it checks by command id that every command the offline run
expects is on the commands topic exactly once and that no other command is. The
kill test also runs under at-least-once, where a command may appear twice. It
also checks that every lead row in the changelog equals the offline run's. A
worker that exits on its own is started again on its data directory, as its
supervisor would. Only the broker-restart test accepts such a crash.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Worker
from drill import (Load, Outcome, drill_events, expected_outcome, group_is_stable, read_commands, read_rows, state_of,
                   transaction_markers)
from nurture.config.settings import Settings
from nurture.streams.report import wait_until_idle

PROJECT = Path(__file__).resolve().parents[2]
KAFKA_SH = PROJECT / "scripts" / "kafka.sh"
LEADS = 300  # 1,800 events
RATE = 40.0  # events per second: 45 s of load
SESSION_TIMEOUT = "10"  # seconds until the group drops a killed worker
FAUST_OFFSET_KEY = b"__faust\x00offset__"  # where Faust's RocksDB store keeps a partition's changelog offset
FAUST_RECOVERY_TIMEOUT = "Aborted tx until highwater"  # Faust's log line when 10 idle seconds end a partition's reading
log = logging.getLogger("drill")


@dataclass
class Group:
    """Workers of one app; ``running`` are those meant to run."""

    workers: list[Worker]
    running: list[Worker]
    restarts: int = 0

    @property
    def settings(self) -> Settings:
        return self.workers[0].settings

    def supervise(self, seconds: float, until: Load | None = None) -> None:
        """Start again, for ``seconds`` or until the load is sent, any running worker that exited."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until is not None and until.sent >= len(until.events)):
            for worker in self.running:
                if worker.process is not None and worker.process.poll() is not None:
                    log.warning("worker in %s exited with %s; starting it again", worker.directory.name,
                                worker.process.returncode)
                    self.restarts += 1
                    worker.start()
            time.sleep(1.0)

    def kill(self, worker: Worker) -> None:
        worker.kill()
        self.running.remove(worker)

    def add(self, worker: Worker) -> None:
        worker.start()
        self.running.append(worker)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {w.directory.name}\n{w.log_tail(15)}" for w in self.workers)


def start_group(broker: str, model_dir: Path, tmp_path: Path, count: int, guarantee: str = "exactly_once") -> Group:
    (tmp_path / "w0").mkdir()
    first = Worker(tmp_path / "w0", broker, model_dir,
                   {"NURTURE_WORKER_SESSION_TIMEOUT_SECONDS": SESSION_TIMEOUT,
                    "NURTURE_WORKER_PROCESSING_GUARANTEE": guarantee}, own_topics=True)
    first.create_topics()
    workers = [first, *(first.replacement(tmp_path / f"w{n}") for n in range(1, count))]
    for worker in workers:
        worker.start()
    return Group(workers, list(workers))


def run_load(group: Group) -> tuple[Load, Outcome]:
    run = f"eos-{uuid.uuid4().hex[:6]}"
    events = drill_events(run, LEADS)
    expected = expected_outcome(group.settings, events)
    assert len(expected.commands) > 300
    wait_for_members(group, len(group.running))
    load = Load(group.settings, events, RATE)
    load.start()
    return load, expected


def finish(group: Group, load: Load, expected: Outcome, *, crashes_allowed: bool = False) -> None:
    """Let the load end and the group catch up, then compare commands and rows with ``expected``.

    Unless ``crashes_allowed``, a worker that exited on its own fails the test too. Under
    at-least-once a command may be published more than once, and readers drop the copies.
    """
    exactly_once = group.settings.worker.processing_guarantee == "exactly_once"
    group.supervise(120, until=load)
    load.wait(30)
    idle = wait_until_idle(group.settings, timeout_seconds=90, quiet_seconds=3.0)
    assert idle.idle, f"{idle.reason}\n{group.logs()}"
    counts = read_commands(group.settings)
    missing = sorted(set(expected.commands) - set(counts))
    repeated = {command_id: n for command_id, n in counts.items() if n > 1}
    unexpected = sorted(set(counts) - set(expected.commands))
    log.info("commands: %d expected, %d distinct published, %d restarts, %d events sent again",
             len(expected.commands), len(counts), group.restarts, load.resent)
    rows = read_rows(group.settings)
    differing = [lead for lead, row in expected.rows.items()
                 if lead not in rows or state_of(rows[lead]) != state_of(row)]
    assert not missing, (f"{len(missing)} of {len(expected.commands)} commands missing, e.g. {missing[:3]}, "
                         f"by input partition: {partitions_of(group, expected, missing)}\n{group.logs()}")
    assert not repeated or not exactly_once, \
        f"{len(repeated)} commands published more than once, e.g. {list(repeated.items())[:3]}"
    assert not unexpected, f"{len(unexpected)} commands the offline run does not make, e.g. {unexpected[:3]}"
    assert not differing, (f"{len(differing)} of {len(expected.rows)} lead rows differ, e.g. {differing[:3]}; "
                           f"first: {row_difference(rows.get(differing[0]), expected.rows[differing[0]])}")
    assert not exactly_once or transaction_markers(group.settings, group.settings.topics.commands) > 0, \
        "the commands topic holds no transaction markers: the worker did not publish in transactions"
    stalled = [w.directory.name for w in group.workers if recovery_waited_out(w.log_text())]
    assert not stalled, f"recovery in {stalled} ended only after Faust's idle timeouts, not at the changelog's end"
    crashed = [w.directory.name for w in group.workers if "We experienced a crash" in w.log_text()]
    assert crashes_allowed or not group.restarts, f"workers in {crashed} crashed and were started again\n{group.logs()}"


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_killed_worker_and_one_added_back(broker, model_dir: Path, tmp_path: Path, guarantee: str) -> None:
    group = start_group(broker, model_dir, tmp_path, 3, guarantee)
    try:
        load, expected = run_load(group)
        group.supervise(12)
        victim = group.workers[1]
        group.kill(victim)  # SIGKILL: no commit, an open transaction (exactly once), RocksDB files as they were
        group.supervise(18)
        group.add(victim)  # back on the same data directory
        finish(group, load, expected)
    finally:
        group.stop()


def test_worker_stopped_and_started_again(broker, model_dir: Path, tmp_path: Path) -> None:
    group = start_group(broker, model_dir, tmp_path, 2)
    try:
        load, expected = run_load(group)
        group.supervise(12)
        restarted = group.workers[1]
        restarted.stop()  # SIGTERM: the worker finishes its batch, commits and marks its tables
        tables = lead_tables(restarted.directory / "data")
        assert any(rows for rows, _ in tables.values()), f"the stopped worker has no lead rows: {tables}"
        unmarked = {name: rows for name, (rows, offset) in tables.items() if rows and offset is None}
        assert not unmarked, f"lead tables with rows and no stored changelog offset: {unmarked} of {tables}"
        group.running.remove(restarted)
        group.supervise(8)
        group.add(restarted)
        finish(group, load, expected)
        log_text = restarted.log_text()
        assert '"local_tables_marked"' in log_text, restarted.log_tail()
        after_restart = log_text[log_text.index('"local_tables_marked"'):]
        assert '"local_tables_kept"' in after_restart, "the restarted worker did not keep its tables"
        assert '"local_tables_reset"' not in after_restart, "the restarted worker rebuilt its tables"
    finally:
        group.stop()


def lead_tables(data_dir: Path) -> dict[str, tuple[int, int | None]]:
    """Return each lead table file of ``data_dir`` with its row count and stored changelog offset (or None).

    A table with no rows may have no offset: a standby partition whose first
    records were still in Faust's buffer at the stop.
    """
    from faust.stores.rocksdb import RocksDBOptions

    tables: dict[str, tuple[int, int | None]] = {}
    for path in sorted(data_dir.glob("**/tables/leads-*.db")):
        db = RocksDBOptions(use_rocksdict=True).open(path)
        try:
            value = db.get(FAUST_OFFSET_KEY)
            rows = sum(1 for key in db.keys() if key != FAUST_OFFSET_KEY)
            tables[path.name] = (rows, None if value is None else int(value))
        finally:
            db.close()
    return tables


@dataclass(frozen=True)
class Broker:
    env: dict[str, str]
    url: str

    def run(self, action: str) -> None:
        subprocess.run(["bash", str(KAFKA_SH), action], env=self.env, check=True, capture_output=True,
                       timeout=120)


@pytest.fixture()
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of this test alone, which it may stop and start on the same port and data directory."""
    port = _free_port()
    env = {**os.environ, "KAFKA_DATA": str(tmp_path / "kafka"), "KAFKA_PORT": str(port)}
    broker = Broker(env, f"kafka://127.0.0.1:{port}")
    broker.run("start")
    try:
        yield broker
    finally:
        broker.run("stop")


def test_broker_restarted_mid_load(own_broker: Broker, model_dir: Path, tmp_path: Path) -> None:
    group = start_group(own_broker.url, model_dir, tmp_path, 2)
    try:
        load, expected = run_load(group)
        group.supervise(12)
        own_broker.run("stop")
        time.sleep(3)
        own_broker.run("start")
        finish(group, load, expected, crashes_allowed=True)  # a worker may give up while the broker is away
    finally:
        group.stop()


def partitions_of(group: Group, expected: Outcome, command_ids: list[str]) -> dict[int, list[str]]:
    """Return the leads of ``command_ids`` by the input partition their events go to."""
    from kafka.partitioner.default import murmur2

    partitions = group.settings.kafka.partitions
    leads: dict[int, list[str]] = {}
    for lead_id in sorted({expected.commands[command_id]["lead_id"] for command_id in command_ids}):
        partition = (murmur2(lead_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
        leads.setdefault(partition, []).append(lead_id)
    return leads


def recovery_waited_out(log_text: str) -> bool:
    """Tell whether Faust's ten idle seconds, not the changelog's end, ended a recovery of this worker log.

    Faust also runs that check when the changelogs are idle between recoveries,
    where it ends nothing, so only its lines inside a recovery count.
    """
    recovering = False
    for line in log_text.splitlines():
        if "Restoring state from changelog topics" in line:
            recovering = True
        elif "Recovery complete" in line:
            recovering = False
        elif recovering and FAUST_RECOVERY_TIMEOUT in line:
            return True
    return False


def row_difference(got: dict | None, want: dict) -> str:
    if got is None:
        return "no row in the changelog"
    mine, theirs = state_of(got), state_of(want)
    return "; ".join(f"{key}: {mine[key]!r} != {theirs[key]!r}" for key in mine if mine[key] != theirs[key])[:1500]


def wait_for_members(group: Group, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not group_is_stable(group.settings, count):
        if time.monotonic() > deadline:
            raise AssertionError(f"the group did not reach {count} members in {timeout:.0f} s\n{group.logs()}")
        group.supervise(1)


def _free_port() -> int:
    """A free port below the ephemeral range, so that no outgoing connection takes it while the broker is down."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError("found no free port between 20000 and 32767")
