"""A three-step journey on a real worker: a branch, a durable wait and a crash during the wait.

The worker reads the time from a clock file, so the test moves time forward by
days without waiting. Events carry the real time, as the codec requires.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from conftest import Worker, commands_for, read_until, send_event
from factories import BOXES, DAY_MS, HOUR_MS, form, open_

JOURNEY = """
[policy]
time_zone = "UTC"

[[journeys]]
name = "onboarding"
trigger = { on = "event", kinds = ["form"], where = { form = "trial" } }
exit = [{ on = "event", kinds = ["form"], where = { conversion = true } }]

[[journeys.steps]]
id = "welcome"
send = { channel = "email", template = "trial_welcome" }

[[journeys.steps]]
id = "opened_welcome"
branch = { engaged = "opened", step = "welcome", within = "2d", then = "guide", else = "reminder" }

[[journeys.steps]]
id = "reminder"
send = { channel = "email", template = "trial_reminder" }
next = "end"

[[journeys.steps]]
id = "guide"
send = { channel = "email", template = "trial_guide" }

[[journeys.steps]]
id = "pause"
wait = { duration = "1d" }

[[journeys.steps]]
id = "to_sales"
handoff = { template = "trial_brief" }
"""
RULES = """
[[rules]]
name = "unused"
on = "event"
kinds = ["form"]
where = { form = "never-sent" }
action = "send_email"
template = "unused"
"""


class Clock:
    def __init__(self, path: Path, now_ms: int) -> None:
        self.path = path
        self.now = now_ms
        self.set(now_ms)

    def set(self, now_ms: int) -> None:
        self.now = now_ms
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(str(now_ms))
        temporary.replace(self.path)  # the worker never reads a half-written file


@pytest.fixture()
def journey_worker(broker, model_dir, tmp_path):
    (tmp_path / "journeys.toml").write_text(JOURNEY)
    (tmp_path / "rules.toml").write_text(RULES)
    clock = Clock(tmp_path / "clock", int(time.time() * 1000))
    worker = Worker(tmp_path, broker, model_dir, {
        "NURTURE_WORKER_JOURNEYS_FILE": str(tmp_path / "journeys.toml"),
        "NURTURE_WORKER_RULES_FILE": str(tmp_path / "rules.toml"),
        "NURTURE_WORKER_CLOCK_FILE": str(clock.path),
    }, own_topics=True)
    worker.create_topics()
    worker.start()
    yield worker, clock
    worker.stop()


def _journey_commands(worker, lead_ids, count, timeout=90.0):
    records = read_until(worker.settings, worker.settings.topics.commands,
                         lambda got: len(commands_for(got, lead_ids)) >= count, timeout, worker)
    return commands_for(records, lead_ids)


def _steps(commands, lead_id):
    return [command["step"] for command in commands if command["lead_id"] == lead_id]


def test_branch_wait_and_handoff(journey_worker, producer):
    worker, clock = journey_worker
    opener, silent = f"open-{uuid.uuid4().hex[:6]}", f"silent-{uuid.uuid4().hex[:6]}"
    fields = {"email": "ola@example.com", "first_name": "Ola"}
    for lead_id in (opener, silent):
        send_event(producer, worker.settings, form(lead_id, clock.now, "trial", fields=fields, consents=BOXES))
    welcomes = _journey_commands(worker, {opener, silent}, 2)
    assert sorted(command["step"] for command in welcomes) == ["welcome", "welcome"]

    welcome = next(command for command in welcomes if command["lead_id"] == opener)
    send_event(producer, worker.settings, open_(opener, clock.now + HOUR_MS // 60,
                                                command_id=welcome["command_id"]))
    commands = _journey_commands(worker, {opener, silent}, 3)
    assert _steps(commands, opener) == ["welcome", "guide"]
    assert _steps(commands, silent) == ["welcome"]

    # The silent lead's window closes after two days; the opener's wait of one day ends first.
    clock.set(clock.now + DAY_MS + 60_000)
    commands = _journey_commands(worker, {opener, silent}, 4)
    assert _steps(commands, opener) == ["welcome", "guide", "to_sales"]
    handoff = commands[-1]
    assert handoff["action"] == "handoff_sales"
    assert handoff["stage_history"][-1]["stage"] == "sales_qualified"

    clock.set(clock.now + DAY_MS)
    commands = _journey_commands(worker, {opener, silent}, 5)
    assert _steps(commands, silent) == ["welcome", "reminder"]
    assert len({command["command_id"] for command in commands}) == len(commands)


def test_wait_survives_worker_crash(journey_worker, producer, tmp_path):
    worker, clock = journey_worker
    lead_id = f"crash-{uuid.uuid4().hex[:6]}"
    send_event(producer, worker.settings, form(lead_id, clock.now, "trial",
                                               fields={"email": "jan@example.com"}, consents=BOXES))
    welcome = _journey_commands(worker, {lead_id}, 1)
    assert _steps(welcome, lead_id) == ["welcome"]

    # The worker dies during the wait; a new one with empty local state takes over.
    time.sleep(2)  # lets the worker commit the offset of the form event
    worker.kill()
    successor = worker.replacement(tmp_path / "successor")
    successor.start()
    try:
        clock.set(clock.now + 2 * DAY_MS + 60_000)
        commands = _journey_commands(successor, {lead_id}, 2, timeout=120.0)
        assert _steps(commands, lead_id)[-1] == "reminder"
        # A redone step keeps its command_id, so any repeat is recognisable downstream.
        reminders = {command["command_id"] for command in commands if command["step"] == "reminder"}
        welcomes = {command["command_id"] for command in commands if command["step"] == "welcome"}
        assert len(reminders) == 1
        assert len(welcomes) == 1
    finally:
        successor.stop()
    text = (successor.log_path).read_text()
    assert any(orjson.loads(line).get("event") == "journey_completed"
               for line in text.splitlines() if line.startswith("{"))


def test_hard_bounce_stops_channel(journey_worker, producer):
    worker, clock = journey_worker
    lead_id = f"bounce-{uuid.uuid4().hex[:6]}"
    send_event(producer, worker.settings, form(lead_id, clock.now, "trial",
                                               fields={"email": "nobody@example.com"}, consents=BOXES))
    welcome = _journey_commands(worker, {lead_id}, 1)[0]
    feedback = {"event_id": f"fb-{lead_id}", "lead_id": lead_id, "event_time": clock.now + 60_000,
                "produced_at": clock.now + 60_000, "command_id": welcome["command_id"],
                "channel": "email", "status": "bounced", "bounce": "hard", "detail": "550 5.1.1"}
    producer.send(worker.settings.topics.feedback, key=lead_id.encode(), value=orjson.dumps(feedback))
    producer.flush()
    deadline = time.monotonic() + 60
    shown = _show(worker, lead_id)
    while "Channel email blocked: hard_bounce" not in shown.stdout and time.monotonic() < deadline:
        time.sleep(1)
        shown = _show(worker, lead_id)
    assert "Channel email blocked: hard_bounce" in shown.stdout, shown.stdout + shown.stderr
    assert "at step opened_welcome (branch)" in shown.stdout

    # After the window the reminder is held back, so the journey ends without a message.
    clock.set(clock.now + 2 * DAY_MS + 60_000)
    deadline = time.monotonic() + 60
    while "completed" not in _show(worker, lead_id).stdout and time.monotonic() < deadline:
        time.sleep(1)
    assert "Journey onboarding: run 1, completed" in _show(worker, lead_id).stdout
    records = read_until(worker.settings, worker.settings.topics.commands, lambda got: True, 30, worker)
    assert _steps(commands_for(records, {lead_id}), lead_id) == ["welcome"]


def _show(worker, lead_id):
    return subprocess.run([str(Path(sys.executable).with_name("nurture")), "journeys", "show", lead_id],
                          env=worker.env, capture_output=True, text=True, timeout=60, cwd=worker.directory)


def test_wait_fires_after_rebalance(journey_worker, producer, tmp_path):
    worker, clock = journey_worker
    lead_ids = {f"move-{number}-{uuid.uuid4().hex[:6]}" for number in range(12)}
    for lead_id in lead_ids:
        send_event(producer, worker.settings, form(lead_id, clock.now, "trial", fields={"email": "x@example.com"},
                                                   consents=BOXES))
    _journey_commands(worker, lead_ids, len(lead_ids))

    # A second worker joins and takes some partitions; then the first one leaves.
    second = worker.replacement(tmp_path / "second")
    second.start()
    try:
        _wait_for_members(worker, 2)
        worker.stop()
        _wait_for_members(second, 1)
        clock.set(clock.now + 2 * DAY_MS + 60_000)
        commands = _journey_commands(second, lead_ids, 2 * len(lead_ids), timeout=120.0)
        for lead_id in lead_ids:
            assert _steps(commands, lead_id)[-1] == "reminder"
        reminders = [command["command_id"] for command in commands if command["step"] == "reminder"]
        assert len(set(reminders)) == len(lead_ids)
    finally:
        second.stop()


def _wait_for_members(worker, count, timeout=90.0):
    from kafka import KafkaAdminClient

    from nurture.streams.kafka_clients import connect

    admin = connect(worker.settings, KafkaAdminClient)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            group = admin.describe_groups([worker.settings.worker.app_id]).get(worker.settings.worker.app_id) or {}
            if len(group.get("members") or []) == count and group.get("group_state") == "Stable":
                return
            time.sleep(1)
        raise AssertionError(f"the group did not reach {count} members: {group}\n{worker.log_tail()}")
    finally:
        admin.close()
