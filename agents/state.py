"""The per-lead table row: features, profile, score, stage, journeys, sends and recent event ids."""

from __future__ import annotations

import binascii
import hashlib
from typing import Any

import orjson

from nurture.agents.privacy.vault import SEALED_FIELDS, Vault, VaultError
from nurture.scoring import features

SCORE_HISTORY_LENGTH = 10
# An event id is remembered as its 8-byte BLAKE2b digest. With 64 ids kept,
# a new event matches an old one by chance with a probability of about 64 / 2**64.
EVENT_DIGEST_BYTES = 8


def new_lead(lead_id: str) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "features": features.new_state(),
        # The fields of SEALED_FIELDS are stored encrypted (agents/privacy/vault.py).
        "profile": {},
        "profile_times": {},
        "score": None,
        "model_version": None,
        "score_history": [],
        "sends": {},
        "fired_once": [],
        "seen": "",  # digests of the last event ids (remember_event)
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
        **_privacy_fields(),
    }


def _privacy_fields() -> dict[str, Any]:
    """Fields added with consent; rows written before them get these on read."""
    return {
        "consent": {},  # channel -> purpose -> {granted, at, source, text_version, event_id}
        "consent_floor": None,  # a grant counts only after this time (the address was erased then)
        "ledger": [],  # [partition, seq] of the lead's consent ledger entries
    }


def decode_lead(payload: bytes | None, lead_id: str, vault: Vault | None) -> dict[str, Any]:
    """Return the stored lead, or a new one when the table has no row yet.

    Without a vault the sealed personal fields stay closed: the lead has no email
    or name, which suits tools that show journeys or scores only.
    """
    if payload is None:
        return new_lead(lead_id)
    lead = orjson.loads(payload)
    for key, value in {**_journey_fields(), **_privacy_fields()}.items():
        lead.setdefault(key, value)
    envelope = lead.pop("sealed", None)
    if envelope is not None and vault is not None:
        fields, dek = vault.open(lead_id, envelope)
        lead["profile"].update(fields)
        vault.remember(lead_id, envelope, dek, fields)
    return lead


def encode_lead(lead: dict[str, Any], vault: Vault | None) -> bytes:
    """Return the row to store, with the personal fields sealed by ``vault``."""
    profile = lead["profile"]
    personal = {name: profile[name] for name in SEALED_FIELDS if profile.get(name)}
    row = dict(lead)
    row["profile"] = {name: value for name, value in profile.items() if name not in SEALED_FIELDS}
    if personal:
        if vault is None:
            raise VaultError(f"lead {lead['lead_id']!r} has personal data and no key ring to seal it")
        row["sealed"] = vault.sealed(lead["lead_id"], personal)
    return orjson.dumps(row)


def remember_event(lead: dict[str, Any], event_id: str, limit: int) -> bool:
    """Record ``event_id`` among the last ``limit`` ids, or return False when it is there already (a redelivery).

    The row keeps the ids as one base64 string of their digests, about 11 characters
    per id whatever its length. Rows written before keep a list of ids, which the
    next new event turns into digests.
    """
    digest = _event_digest(event_id)
    known = _seen_digests(lead)
    if _contains(known, digest):
        return False
    known = (known + digest)[-limit * EVENT_DIGEST_BYTES:]
    lead["seen"] = binascii.b2a_base64(known, newline=False).decode("ascii")
    return True


def has_seen(lead: dict[str, Any], event_id: str) -> bool:
    """Tell whether ``event_id`` is among the event ids the row remembers."""
    return _contains(_seen_digests(lead), _event_digest(event_id))


def _event_digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=EVENT_DIGEST_BYTES).digest()


def _seen_digests(lead: dict[str, Any]) -> bytes:
    seen = lead.get("seen") or ""
    if isinstance(seen, list):  # a row written before ids were kept as digests
        return b"".join(_event_digest(event_id) for event_id in seen)
    return binascii.a2b_base64(seen)


def _contains(known: bytes, digest: bytes) -> bool:
    at = known.find(digest)
    while at > 0 and at % EVENT_DIGEST_BYTES:  # a match across two digests does not count
        at = known.find(digest, at + 1)
    return at != -1


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
