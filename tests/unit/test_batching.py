"""The batched ingest path gives the same results as processing one event at a time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from factories import FixedClock, Message, Record, Recorder, grants, privacy_parts
from nurture.agents.ingest import IngestHandler, Inputs, Outputs, RuntimeHolder
from nurture.agents.pipeline import process_consent, process_event
from nurture.agents.state import decode_lead, new_lead
from nurture.streams.codecs import encode_event

KINDS = {"events.click": "click", "events.open": "open", "events.form": "form", "events.consent": "consent"}
CODECS = {topic: "json" for topic in KINDS}


def _records(events) -> list[Record]:
    return [
        Record(Message(f"events.{event.kind}", 0, offset, event.lead_id.encode(),
                       encode_event(event, "json")))
        for offset, event in enumerate(events)
    ]


def _with_consent(events):
    """Every lead of ``events`` grants consent before its first event."""
    return [change for lead in dict.fromkeys(event.lead_id for event in events) for change in grants(lead)] + events


def _run_batches(runtime, records, size) -> tuple[Recorder, dict[bytes, Any]]:
    table: dict[bytes, bytes] = {}
    recorder = Recorder()
    privacy = privacy_parts()
    handler = IngestHandler(Inputs(KINDS, CODECS, "timers"), table,
                            Outputs(recorder.send_command, recorder.send_deadletter), RuntimeHolder(runtime),
                            index={}, clock=FixedClock(0), privacy=privacy)

    async def feed() -> None:
        for start in range(0, len(records), size):
            await handler.handle_batch(records[start:start + size], lambda record: None)

    asyncio.run(feed())
    return recorder, {key: decode_lead(value, key.decode(), privacy.vault) for key, value in table.items()}


@pytest.fixture(scope="module")
def sample(history):
    # A month of the clickstream: hundreds of leads, with repeats inside batches.
    return _with_consent([event for event in history if event.event_time >= 1_717_200_000_000][:3000])


@pytest.mark.parametrize("size", [1, 7, 500])
def test_batches_match_one_at_a_time(runtime, sample, size: int) -> None:
    leads: dict[str, dict] = {}
    expected = []
    for event in sample:
        lead = leads.setdefault(event.lead_id, new_lead(event.lead_id))
        process = process_consent if event.kind == "consent" else process_event
        expected.extend(process(lead, event, runtime).commands)

    recorder, rows = _run_batches(runtime, _records(sample), size)
    strip = lambda commands: [{k: v for k, v in c.items() if k not in ("created_at", "expires_at")}
                              for c in commands]

    assert len(expected) > 20
    assert strip(recorder.commands) == strip(expected)
    assert recorder.dead_letters == []
    for lead_id, lead in leads.items():
        assert rows[lead_id.encode()]["features"] == lead["features"]
        assert rows[lead_id.encode()]["score_history"] == lead["score_history"]


def test_bad_record_inside_batch_is_dead_lettered(runtime, sample) -> None:
    records = _records(sample[:50])
    records.insert(10, Record(Message("events.click", 0, 999, b"x", b"{oops")))
    recorder, rows = _run_batches(runtime, records, 500)

    assert [letter["nurture.reason"] for letter in recorder.dead_letters] == ["json_invalid"]
    assert recorder.dead_letters[0]["nurture.source.offset"] == "999"
    assert len(rows) == len({event.lead_id for event in sample[:50]})


class _Steps(dict):
    """A lead table that notes each row write in a shared list of steps."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__()
        self.steps = steps

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.steps.append("row")
        super().__setitem__(key, value)


def test_flush_puts_commands_before_rows(runtime, sample) -> None:
    steps: list[str] = []

    async def send_command(key: bytes, value: bytes) -> None:
        steps.append("command")

    async def flush() -> None:
        steps.append("flush")

    handler = IngestHandler(Inputs(KINDS, CODECS, "timers"), _Steps(steps),
                            Outputs(send_command, Recorder().send_deadletter, flush=flush), RuntimeHolder(runtime),
                            index={}, clock=FixedClock(0), privacy=privacy_parts())
    records = _records(sample)

    asyncio.run(handler.handle_batch(records, lambda record: None))

    assert "command" in steps, "the sample makes no command, so the order is not tested"
    assert steps.count("flush") == 1
    flushed = steps.index("flush")
    assert "row" not in steps[:flushed], "a lead row was written before the batch's commands were flushed"
    assert "command" not in steps[flushed:], "a command was sent after the flush"
