"""The export of everything held about one lead, as one JSON document."""

from __future__ import annotations

from typing import Any

# Row fields shown under their own heading; whatever else the row contains goes under "other".
_SECTIONS = {
    "profile": "profile",
    "consent": "consent",
    "features": "features",
    "score": "score",
    "probability": "score_probability",
    "model_version": "model_version",
    "score_history": "score_history",
    "stage": "stage",
    "stage_history": "stage_history",
    "journeys": "journeys",
    "outbox": "waiting_commands",
    "sends": "commands_by_rule",
    "issued": "commands_issued",
    "channel_sends": "messages_by_channel",
    "deliveries": "deliveries",
    "blocked": "blocked_channels",
    "recent": "recent_activity",
}
_INTERNAL = {"lead_id", "seen", "due", "fired_once", "ledger", "consent_floor", "profile_times", "shadow"}


def build_export(lead: dict[str, Any], ledger_entries: list[dict[str, Any]], exported_at: int) -> dict[str, Any]:
    """Return the export of ``lead`` (its opened row) and its consent ledger entries."""
    document: dict[str, Any] = {"lead_id": lead["lead_id"], "exported_at": exported_at}
    for field, heading in _SECTIONS.items():
        document[heading] = lead.get(field)
    document["consent_history"] = ledger_entries
    document["rules_fired_once"] = lead.get("fired_once", [])
    document["consent_floor"] = lead.get("consent_floor")
    document["other"] = {key: value for key, value in lead.items() if key not in _SECTIONS and key not in _INTERNAL}
    return document
