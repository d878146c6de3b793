"""Building nurture command records."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from nurture.agents.rules import Decision
from nurture.schemas import COMMAND_SCHEMA_VERSION
from nurture.schemas.records import Event

# Profile fields a delivery worker may need, per channel; nothing else leaves.
PERSONALISATION_FIELDS = {
    "email": ("email", "first_name"),
    "sms": ("phone", "first_name"),
    "push": ("first_name",),
    "crm": ("email", "first_name"),
}


def command_id(lead_id: str, rule: str, template: str | None, trigger_event_id: str) -> str:
    """Return the deterministic id: the same lead, rule, template and event give the same id."""
    return _digest(lead_id, rule, template or "", trigger_event_id)


def step_command_id(lead_id: str, journey: str, entry: int, step: str) -> str:
    """Return the id of a journey step's command: one per lead, journey run and step."""
    return _digest(lead_id, "journey", journey, str(entry), step)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Origin:
    """The origin of a command: its id, the rule or journey step, and the trigger and its time."""

    command_id: str
    rule: str
    trigger_event_id: str
    event_time: int
    journey: str | None = None
    step: str | None = None


def build_command(lead: dict[str, Any], decision: Decision, event: Event,
                  reasons: list[dict[str, Any]], now_ms: int | None = None) -> dict[str, Any]:
    rule = decision.rule
    origin = Origin(command_id(lead["lead_id"], rule.name, decision.template, event.event_id),
                    rule.name, event.event_id, event.event_time)
    return make_command(lead, origin, rule.action, rule.channel, decision.template, rule.expires_hours,
                        reasons, now_ms)


def make_command(lead: dict[str, Any], origin: Origin, action: str, channel: str, template: str | None,
                 expires_hours: float, reasons: list[dict[str, Any]], now_ms: int | None = None,
                 score: float | None = None) -> dict[str, Any]:
    """Build a command; ``score`` replaces the lead's stored score, when given."""
    created = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    profile = lead["profile"]
    handoff = action == "handoff_sales"
    return {
        "schema_version": COMMAND_SCHEMA_VERSION,
        "command_id": origin.command_id,
        "lead_id": lead["lead_id"],
        "action": action,
        "channel": channel,
        "template": template,
        "rule": origin.rule,
        "trigger_event_id": origin.trigger_event_id,
        "event_time": origin.event_time,
        "created_at": created,
        "expires_at": created + int(expires_hours * 3_600_000),
        "score": float(score if score is not None else lead["score"] or 0.0),
        "model_version": str(lead["model_version"]),
        "reasons": reasons,
        "personalisation": {
            name: str(profile[name]) for name in PERSONALISATION_FIELDS.get(channel, ()) if profile.get(name)
        },
        "journey": origin.journey,
        "step": origin.step,
        "stage": lead.get("stage"),
        "stage_history": [
            {"at": at, "stage": stage, "cause": cause} for at, stage, cause in lead.get("stage_history", [])
        ] if handoff else [],
        "recent_activity": [
            {"at": at, "kind": kind, "detail": detail} for at, kind, detail in lead.get("recent", [])
        ] if handoff else [],
    }


def refresh_times(command: dict[str, Any], expires_hours: float, now_ms: int | None = None) -> None:
    """Restamp a command that waited in the outbox: created now, expiring from now."""
    created = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    command["created_at"] = created
    command["expires_at"] = created + int(expires_hours * 3_600_000)
