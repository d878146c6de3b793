"""Record types of the engine, built from the Avro schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Fields every event record has; everything else is kind-specific and kept in
# ``Event.attrs`` exactly as the schema names it.
COMMON_EVENT_FIELDS = ("event_id", "lead_id", "event_time", "produced_at")


@dataclass(frozen=True)
class Event:
    """A decoded, validated event of one kind (click, open or form)."""

    kind: str
    event_id: str
    lead_id: str
    event_time: int  # epoch milliseconds UTC
    produced_at: int  # epoch milliseconds UTC
    attrs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, kind: str, record: dict[str, Any]) -> "Event":
        attrs = {key: value for key, value in record.items() if key not in COMMON_EVENT_FIELDS}
        return cls(
            kind=kind,
            event_id=record["event_id"],
            lead_id=record["lead_id"],
            event_time=record["event_time"],
            produced_at=record["produced_at"],
            attrs=attrs,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "lead_id": self.lead_id,
            "event_time": self.event_time,
            "produced_at": self.produced_at,
            **self.attrs,
        }

    @property
    def is_conversion(self) -> bool:
        return self.kind == "form" and bool(self.attrs.get("conversion"))
