"""Small builders of events for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from nurture.schemas.records import Event

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
T0 = 1_717_200_000_000  # 2024-06-01 00:00 UTC


def click(lead: str, at: int, page: str = "product_view", event_id: str | None = None,
          **attrs: object) -> Event:
    fields = {"page": page, "url": None, "session_id": None, "platform": None,
              "channel": None, "command_id": None, "template": None, **attrs}
    return Event("click", event_id or f"c-{lead}-{at}-{page}", lead, at, at, fields)


def open_(lead: str, at: int, event_id: str | None = None, **attrs: object) -> Event:
    fields = {"channel": "email", "command_id": None, "template": None, "platform": None, **attrs}
    return Event("open", event_id or f"o-{lead}-{at}", lead, at, at, fields)


def form(lead: str, at: int, name: str = "signup", conversion: bool = False,
         fields: dict[str, str] | None = None, event_id: str | None = None) -> Event:
    attrs = {"form": name, "conversion": conversion, "session_id": None, "platform": None,
             "channel": None, "fields": fields if fields is not None else {}}
    return Event("form", event_id or f"f-{lead}-{at}-{name}", lead, at, at, attrs)


class Recorder:
    """Stands in for the command and dead-letter topics: keeps what the handler sends."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, str]] = []

    async def send_command(self, key: bytes, value: bytes) -> None:
        self.commands.append(orjson.loads(value))

    async def send_deadletter(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        letter = {name: raw.decode() for name, raw in headers}
        letter["value"] = value.decode("utf-8", "replace")
        self.dead_letters.append(letter)


class FixedClock:
    """A worker clock that stays where a test puts it."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


@dataclass
class Message:
    """The parts of a Kafka message the ingest handler reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Record:
    message: Message
