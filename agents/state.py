"""The per-lead table row: features, profile, score, sends and recent event ids."""

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
    }


def decode_lead(payload: bytes | None, lead_id: str) -> dict[str, Any]:
    """Return the stored lead, or a new one when the table has no row yet."""
    return new_lead(lead_id) if payload is None else orjson.loads(payload)


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
