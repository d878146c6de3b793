"""Small builders of events for tests."""

from __future__ import annotations

import base64
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
         fields: dict[str, str] | None = None, event_id: str | None = None,
         consents: list[dict[str, Any]] | None = None) -> Event:
    attrs = {"form": name, "conversion": conversion, "session_id": None, "platform": None,
             "channel": None, "fields": fields if fields is not None else {}, "consents": consents or []}
    return Event("form", event_id or f"f-{lead}-{at}-{name}", lead, at, at, attrs)


def consent(lead: str, at: int, channel: str = "email", granted: bool = True, purpose: str = "marketing",
            source: str = "form", event_id: str | None = None) -> Event:
    attrs = {"channel": channel, "purpose": purpose, "granted": granted, "source": source, "text_version": "2024-05"}
    return Event("consent", event_id or f"k-{lead}-{at}-{channel}-{granted}", lead, at, at, attrs)


# Marketing consent boxes for every channel, ticked on a form.
BOXES = [{"channel": channel, "purpose": "marketing", "granted": True, "text_version": "2024-05"}
         for channel in ("email", "sms", "push", "phone")]


def grants(lead: str, at: int = T0 - DAY_MS) -> list[Event]:
    """Marketing consent on every channel, given before the test's first event."""
    return [consent(lead, at, channel) for channel in ("email", "sms", "push", "phone")]


def consenting(lead_id: str) -> dict[str, Any]:
    """Return a new lead row that already contains marketing consent on every channel."""
    from nurture.agents.privacy.consent import apply_consent
    from nurture.agents.state import new_lead

    lead = new_lead(lead_id)
    for change in grants(lead_id):
        apply_consent(lead, change)
    return lead


# A fixed key ring for tests only; production rings come from `nurture privacy keygen`.
TEST_KEYS = (
    "current=t1\n"
    "hash=" + base64.b64encode(bytes(range(32))).decode() + "\n"
    "t1=" + base64.b64encode(bytes(range(32, 64))).decode() + "\n"
)


def privacy_parts(tmp_path: Any = None) -> Any:
    """Privacy parts with the test key ring, a dict ledger and recorded erasures and receipts."""
    from pathlib import Path

    from nurture.agents.privacy.erasure import ErasureMemory
    from nurture.agents.privacy.keys import parse_keys
    from nurture.agents.privacy.requests import PrivacyParts
    from nurture.agents.privacy.vault import Vault
    from nurture.streams.ledger_store import LedgerStore

    ring = parse_keys(TEST_KEYS, "test keys")
    memory = ErasureMemory(ring)
    memory.loaded.set()
    sent: dict[str, list[tuple[bytes, bytes]]] = {"erasures": [], "receipts": []}

    async def send_erasure(key: bytes, value: bytes) -> None:
        sent["erasures"].append((key, value))

    async def send_receipt(key: bytes, value: bytes) -> None:
        sent["receipts"].append((key, value))

    parts = PrivacyParts(Vault(ring), memory, LedgerStore({}), send_erasure, send_receipt,
                         Path(tmp_path or ".") / "exports",
                         remaining=("events.click", "events.open", "events.form", "nurture.commands"))
    parts.sent = sent  # type: ignore[attr-defined]
    return parts


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
