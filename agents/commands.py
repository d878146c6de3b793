"""Building nurture command records."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from nurture.agents.rules import Decision
from nurture.schemas import COMMAND_SCHEMA_VERSION
from nurture.schemas.records import Event

# Profile fields a delivery worker may need, per channel; nothing else leaves.
PERSONALISATION_FIELDS = {"email": ("email", "first_name"), "crm": ("email", "first_name")}


def command_id(lead_id: str, rule: str, template: str | None, trigger_event_id: str) -> str:
    """Return the deterministic id: the same lead, rule, template and event give the same id."""
    identity = "\x1f".join((lead_id, rule, template or "", trigger_event_id))
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]


def build_command(lead: dict[str, Any], decision: Decision, event: Event,
                  reasons: list[dict[str, Any]], now_ms: int | None = None) -> dict[str, Any]:
    rule = decision.rule
    created = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    fields = PERSONALISATION_FIELDS.get(rule.channel, ())
    profile = lead["profile"]

    return {
        "schema_version": COMMAND_SCHEMA_VERSION,
        "command_id": command_id(lead["lead_id"], rule.name, decision.template, event.event_id),
        "lead_id": lead["lead_id"],
        "action": rule.action,
        "channel": rule.channel,
        "template": decision.template,
        "rule": rule.name,
        "trigger_event_id": event.event_id,
        "event_time": event.event_time,
        "created_at": created,
        "expires_at": created + int(rule.expires_hours * 3_600_000),
        "score": float(lead["score"]),
        "model_version": str(lead["model_version"]),
        "reasons": reasons,
        "personalisation": {name: str(profile[name]) for name in fields if profile.get(name)},
    }
