"""The ingest handler's feedback and timer-notice paths, with dict tables in place of Faust's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from factories import DAY_MS, HOUR_MS, T0, FixedClock, Message, Record, Recorder, form, grants, privacy_parts
from nurture.agents.ingest import IngestHandler, Inputs, Outputs, RuntimeHolder
from nurture.agents.journeys.loader import load_journeys
from nurture.agents.pipeline import Runtime
from nurture.agents.state import decode_lead
from nurture.streams.codecs import encode_event
from nurture.streams.timers import index_key

JOURNEY = """
[policy]
time_zone = "UTC"

[[journeys]]
name = "drip"
trigger = { on = "event", kinds = ["form"] }

[[journeys.steps]]
id = "hello"
send = { channel = "email", template = "hello" }

[[journeys.steps]]
id = "pause"
wait = { duration = "1d" }

[[journeys.steps]]
id = "again"
send = { channel = "email", template = "again" }
"""
TOPICS = {"events.click": "click", "events.open": "open", "events.form": "form", "feedback": "feedback",
          "events.consent": "consent", "privacy.requests": "privacy"}


class Setup:
    def __init__(self, model, tmp_path: Path) -> None:
        path = tmp_path / "journeys.toml"
        path.write_text(JOURNEY)
        runtime = Runtime(model=model, rules=[], book=load_journeys(path))
        self.table: dict[bytes, bytes] = {}
        self.index: dict[bytes, bytes] = {}
        self.clock = FixedClock(T0)
        self.recorder = Recorder()
        self.privacy = privacy_parts(tmp_path)
        runtime.erasures = self.privacy.erasures
        self.handler = IngestHandler(
            Inputs(TOPICS, {topic: "json" for topic in TOPICS}, "timers"), self.table,
            Outputs(self.recorder.send_command, self.recorder.send_deadletter), RuntimeHolder(runtime),
            index=self.index, clock=self.clock, privacy=self.privacy)
        self.offset = 0
        for lead in ("a", "b", "c"):
            for change in grants(lead):
                self.feed("events.consent", lead.encode(), encode_event(change, "json"))

    def feed(self, topic: str, key: bytes, value: bytes) -> None:
        self.offset += 1
        record = Record(Message(topic, 0, self.offset, key, value))
        asyncio.run(self.handler.handle_batch([record], lambda _: None))

    def lead(self, lead_id: str) -> dict:
        return decode_lead(self.table[lead_id.encode()], lead_id, self.privacy.vault)


def _feedback(lead_id: str, command_id: str, status: str, bounce: str | None = None) -> bytes:
    return orjson.dumps({"event_id": f"fb-{command_id}-{status}", "lead_id": lead_id, "event_time": T0 + HOUR_MS,
                         "produced_at": T0 + HOUR_MS, "command_id": command_id, "channel": "email",
                         "status": status, "bounce": bounce, "detail": None})


def test_wait_entry_in_index(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields={"email": "a@example.com"}), "json"))
    assert [c["step"] for c in setup.recorder.commands] == ["hello"]
    assert list(setup.index) == [index_key(T0 + DAY_MS, b"a")]
    assert setup.lead("a")["due"] == T0 + DAY_MS


def test_notice_fires_and_clears_entry(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields={"email": "a@example.com"}), "json"))
    setup.clock.now = T0 + DAY_MS
    setup.feed("timers", b"a", orjson.dumps({"due": T0 + DAY_MS}))
    assert [c["step"] for c in setup.recorder.commands] == ["hello", "again"]
    assert setup.index == {}
    assert setup.lead("a")["due"] is None


def test_early_notice_changes_nothing(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields={"email": "a@example.com"}), "json"))
    setup.feed("timers", b"a", orjson.dumps({"due": T0 + DAY_MS}))
    assert len(setup.recorder.commands) == 1
    assert list(setup.index) == [index_key(T0 + DAY_MS, b"a")]


def test_stale_entry_removed(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields={"email": "a@example.com"}), "json"))
    stale = index_key(T0 - 5, b"a")
    setup.index[stale] = b"1"
    setup.feed("timers", b"a", orjson.dumps({"due": T0 - 5}))
    assert stale not in setup.index
    assert index_key(T0 + DAY_MS, b"a") in setup.index


def test_notice_for_missing_lead_dropped(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.index[index_key(T0, b"gone")] = b"1"
    setup.feed("timers", b"gone", orjson.dumps({"due": T0}))
    assert setup.index == {}
    assert b"gone" not in setup.table


def test_bad_notice_dead_lettered(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("timers", b"a", b"not json")
    assert [letter["nurture.reason"] for letter in setup.recorder.dead_letters] == ["timer_notice_invalid"]


def test_feedback_for_unknown_lead_creates_nothing(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("feedback", b"nobody", _feedback("nobody", "c1", "delivered"))
    assert b"nobody" not in setup.table
    assert setup.recorder.dead_letters == []


def test_hard_bounce_feedback_stops_next_send(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields={"email": "a@example.com"}), "json"))
    hello = setup.recorder.commands[0]
    setup.feed("feedback", b"a", _feedback("a", hello["command_id"], "bounced", "hard"))
    assert setup.lead("a")["blocked"]["email"]["reason"] == "hard_bounce"
    setup.clock.now = T0 + DAY_MS
    setup.feed("timers", b"a", orjson.dumps({"due": T0 + DAY_MS}))
    assert len(setup.recorder.commands) == 1


def test_invalid_feedback_dead_lettered(model, tmp_path):
    setup = Setup(model, tmp_path)
    payload = orjson.loads(_feedback("a", "c1", "delivered"))
    payload["status"] = "lost"
    setup.feed("feedback", b"a", orjson.dumps(payload))
    assert [letter["nurture.reason"] for letter in setup.recorder.dead_letters] == ["schema_invalid"]


def test_feedback_feeds_delivery_levels(model, tmp_path):
    setup = Setup(model, tmp_path)
    setup.feed("events.form", b"a", encode_event(form("a", T0, fields={"email": "a@example.com"}), "json"))
    hello = setup.recorder.commands[0]
    assert hello["created_at"] == T0  # stamped by the worker clock
    setup.feed("feedback", b"a", _feedback("a", hello["command_id"], "sent"))
    summary = setup.handler.sla.summary(T0 + HOUR_MS)["email"]
    assert summary["outcomes"] == 1
    assert summary["sent_p50_seconds"] == 3600
    histogram = setup.handler.metrics.delivery_seconds.labels("email", "sent")
    assert histogram._sum.get() == 3600
