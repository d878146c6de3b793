"""The per-lead table row: features, profile, score, stage, journeys, sends and recent event ids."""

from __future__ import annotations

from typing import Any

import orjson

from nurture.scoring import features

SCORE_HISTORY_LENGTH = 10


def new_lead(lead_id: str) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "features": features.new_state(),
        # NOTE: profile fields are stored in clear for now; encryption at rest
        # with per-lead keys belongs to the privacy layer.
        "profile": {},
        "profile_times": {},
        "score": None,
        "model_version": None,
        "score_history": [],
        "sends": {},
        "fired_once": [],
        "seen": [],
        **_journey_fields(),
    }


def _journey_fields() -> dict[str, Any]:
    """Fields added with journeys; rows written before them get these on read."""
    return {
        "stage": None,
        "stage_history": [],  # [at, stage, cause]
        "journeys": {},  # journey name -> its run (agents/journeys/engine.py)
        "outbox": [],  # commands deferred by quiet hours or caps (agents/policy.py)
        "channel_sends": {},  # channel -> send times, for caps
        "blocked": {},  # channel -> {reason, at, command_id} after a hard bounce
        "deliveries": [],  # latest delivery outcomes from nurture.feedback
        "recent": [],  # [at, kind, detail] of the latest events, without personal data
        "due": None,  # the earliest due time, the key of the lead in the timer index
        "issued": {},  # command_id -> [created_at, channel] of recent commands, for delivery times
    }


def decode_lead(payload: bytes | None, lead_id: str) -> dict[str, Any]:
    """Return the stored lead, or a new one when the table has no row yet."""
    if payload is None:
        return new_lead(lead_id)
    lead = orjson.loads(payload)
    for key, value in _journey_fields().items():
        lead.setdefault(key, value)
    return lead


def encode_lead(lead: dict[str, Any]) -> bytes:
    return orjson.dumps(lead)


def remember_event(lead: dict[str, Any], event_id: str, limit: int) -> bool:
    """Record ``event_id``; return False when it was already seen (a redelivery)."""
    seen: list[str] = lead["seen"]
    if event_id in seen:
        return False
    seen.append(event_id)
    del seen[:-limit]

    return True


def record_score(lead: dict[str, Any], at_ms: int, score: float, model_version: str) -> float | None:
    """Store the new score and return the previous one."""
    previous = lead["score"]
    lead["score"] = score
    lead["model_version"] = model_version
    history: list[list[Any]] = lead["score_history"]
    history.append([at_ms, score, model_version])
    del history[:-SCORE_HISTORY_LENGTH]

    return previous


def record_send(lead: dict[str, Any], key: str, channel: str, at_ms: int, command_id: str) -> None:
    """Remember the latest command per template (or per action) for caps and sequences."""
    lead["sends"][key] = {"at": at_ms, "channel": channel, "command_id": command_id}


RECENT_ACTIVITY_LENGTH = 10


def record_activity(lead: dict[str, Any], at_ms: int, kind: str, detail: str) -> None:
    """Keep the latest events in time order for a salesperson's brief."""
    recent: list[list[Any]] = lead["recent"]
    recent.append([at_ms, kind, detail])
    recent.sort(key=lambda item: item[0])
    del recent[:-RECENT_ACTIVITY_LENGTH]


ISSUED_LENGTH = 50


def record_issued(lead: dict[str, Any], command: dict[str, Any]) -> None:
    """Record when a command was built, so that feedback about it gives the delivery time."""
    issued: dict[str, list[Any]] = lead["issued"]
    issued[command["command_id"]] = [command["created_at"], command["channel"]]
    for command_id in list(issued)[:-ISSUED_LENGTH]:
        del issued[command_id]
