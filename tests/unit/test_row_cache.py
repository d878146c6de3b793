"""The row cache: same results as parsing every row, and a row changed elsewhere is parsed again."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from factories import FixedClock, Message, Record, Recorder, click, grants, privacy_parts
from nurture.agents.ingest import IngestHandler, Inputs, Outputs, RuntimeHolder
from nurture.agents.row_cache import RowCache
from nurture.agents.state import decode_lead, encode_lead
from nurture.schemas.records import Event
from nurture.streams.codecs import encode_event

KINDS = {"events.click": "click", "events.open": "open", "events.form": "form", "events.consent": "consent",
         "privacy.requests": "privacy"}
CODECS = {topic: "json" for topic in KINDS}
T0 = 1_717_200_000_000


def records(events: list[Event]) -> list[Record]:
    topic = {kind: name for name, kind in KINDS.items()}
    return [Record(Message(topic[event.kind], 0, offset, event.lead_id.encode(), encode_event(event, "json")))
            for offset, event in enumerate(events)]


class Setup:
    def __init__(self, runtime: Any, capacity: int) -> None:
        self.table: dict[bytes, bytes] = {}
        self.recorder = Recorder()
        self.privacy = privacy_parts()
        self.handler = IngestHandler(Inputs(KINDS, CODECS, "timers"), self.table,
                                     Outputs(self.recorder.send_command, self.recorder.send_deadletter),
                                     RuntimeHolder(runtime), index={}, clock=FixedClock(T0),
                                     privacy=self.privacy, rows=RowCache(capacity))

    def feed(self, events: list[Event], size: int = 50) -> None:
        batch = records(events)

        async def run() -> None:
            for start in range(0, len(batch), size):
                await self.handler.handle_batch(batch[start:start + size], lambda record: None)

        asyncio.run(run())

    def row(self, lead_id: str) -> dict[str, Any]:
        return decode_lead(self.table[lead_id.encode()], lead_id, self.privacy.vault)


def test_cache_keeps_only_rows_written_as_stored() -> None:
    rows = RowCache(2)
    lead = {"lead_id": "a"}
    rows.put(b"a", b"row-1", lead)

    assert rows.take(b"a", b"row-2") is None  # the table contains other bytes now
    assert rows.take(b"a", b"row-1") is None  # a miss dropped the entry
    rows.put(b"a", b"row-1", lead)
    assert rows.take(b"a", b"row-1") is lead
    assert rows.take(b"a", b"row-1") is None  # handed out once
    assert (rows.hits, rows.misses) == (1, 3)


def test_cache_drops_least_recently_written() -> None:
    rows = RowCache(2)
    for key in (b"a", b"b", b"a", b"c"):
        rows.put(key, key, {"lead_id": key.decode()})

    assert len(rows) == 2
    assert rows.take(b"b", b"b") is None
    assert rows.take(b"a", b"a") == {"lead_id": "a"}


def test_zero_capacity_keeps_nothing() -> None:
    rows = RowCache(0)
    rows.put(b"a", b"a", {})

    assert len(rows) == 0


@pytest.fixture(scope="module")
def sample(history: list[Event]) -> list[Event]:
    events = [event for event in history if event.event_time >= T0][:3000]
    leads = dict.fromkeys(event.lead_id for event in events)
    return [change for lead in leads for change in grants(lead)] + events


def test_cached_and_parsed_rows_give_same_results(runtime: Any, sample: list[Event]) -> None:
    parsed, cached = Setup(runtime, 0), Setup(runtime, 10_000)

    parsed.feed(sample)
    cached.feed(sample)

    assert cached.handler.rows.hits > len(sample) // 10, "the sample never reused a cached row"
    assert parsed.handler.rows.hits == 0
    assert len(parsed.recorder.commands) > 20
    assert cached.recorder.commands == parsed.recorder.commands
    assert cached.recorder.dead_letters == parsed.recorder.dead_letters == []
    assert cached.table.keys() == parsed.table.keys()
    for key in parsed.table:
        assert cached.row(key.decode()) == parsed.row(key.decode())


def test_row_changed_elsewhere_is_parsed_again(runtime: Any) -> None:
    setup = Setup(runtime, 100)
    setup.feed([*grants("a"), click("a", T0)])
    changed = setup.row("a")
    changed["features"]["events"] = 1000  # as a row recovered from another worker's changelog
    setup.table[b"a"] = encode_lead(changed, setup.privacy.vault)

    setup.feed([click("a", T0 + 60_000)])

    assert setup.row("a")["features"]["events"] == 1001


def test_erasure_drops_the_cached_row(runtime: Any) -> None:
    setup = Setup(runtime, 100)
    setup.feed([*grants("a"), click("a", T0), *grants("b"), click("b", T0)])
    assert len(setup.handler.rows) == 2
    request = Event("privacy", "r-1", "a", T0 + 1, T0 + 1, {"action": "erase", "requested_by": "dpo"})

    setup.feed([request])

    assert len(setup.handler.rows) == 1
    assert b"a" not in setup.table
    receipts = [orjson.loads(value) for _, value in setup.privacy.sent["receipts"]]
    assert [receipt["status"] for receipt in receipts] == ["erased"]
