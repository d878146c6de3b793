"""Delivery policy for every command, from rules and journeys alike.

No command leaves without the consent it needs (agents/privacy/consent.py).
A message channel can be blocked for a lead (after a hard bounce), capped
(at most N messages in a window) and closed at night (quiet hours in the lead's
own time zone). A command that may not go now waits in the lead's outbox until
the time it may, and the timer index fires it then. A command that would wait
longer than the policy's ``max_delay`` is dropped instead, because a late
message often does more harm than none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nurture.agents.journeys.calendar import lead_zone, quiet_hours_end
from nurture.agents.journeys.spec import Policy
from nurture.agents.privacy.consent import missing_consent

CHANNEL_SENDS_LENGTH = 50  # sends kept per channel; caps above this are rejected at load


@dataclass(frozen=True)
class Verdict:
    """``send`` now, ``defer`` until ``due``, or ``hold`` for ``reason`` (dropped)."""

    action: str
    reason: str | None = None
    due: int | None = None


SEND = Verdict("send")


def judge(lead: dict[str, Any], channel: str, at_ms: int, policy: Policy) -> Verdict:
    """Return what to do with a command for ``channel`` decided at ``at_ms``."""
    no_consent = missing_consent(lead, channel, policy.consent)
    if no_consent is not None:
        return Verdict("hold", no_consent)
    blocked = lead["blocked"].get(channel)
    if blocked is not None:
        return Verdict("hold", f"channel_blocked:{blocked['reason']}")
    due, reason = at_ms, None
    cap = policy.caps.get(channel)
    if cap is not None:
        recent = sorted(t for t in lead["channel_sends"].get(channel, []) if t > at_ms - cap.window_ms)
        if len(recent) >= cap.limit:
            # The window has room again once the oldest send that fills it leaves it.
            due, reason = recent[len(recent) - cap.limit] + cap.window_ms, "frequency_cap"
    quiet = policy.quiet_hours
    if quiet is not None and channel in quiet.channels:
        zone = lead_zone(lead["profile"].get("time_zone"), policy.time_zone)
        end = quiet_hours_end(due, zone, quiet)
        if end is not None:
            due, reason = end, reason or "quiet_hours"
    return SEND if reason is None else Verdict("defer", reason, due)


def record_channel_send(lead: dict[str, Any], channel: str, at_ms: int) -> None:
    sends: list[int] = lead["channel_sends"].setdefault(channel, [])
    sends.append(at_ms)
    sends.sort()
    del sends[:-CHANNEL_SENDS_LENGTH]


def defer(lead: dict[str, Any], command: dict[str, Any], verdict: Verdict, at_ms: int,
          expires_hours: float) -> None:
    """Put ``command`` in the lead's outbox until ``verdict.due``."""
    lead["outbox"].append({
        "due": verdict.due, "reason": verdict.reason, "since": at_ms,
        "expires_hours": expires_hours, "command": command,
    })


def due_entries(lead: dict[str, Any], now_ms: int) -> list[dict[str, Any]]:
    """Remove and return the outbox entries due at ``now_ms``, earliest first."""
    outbox: list[dict[str, Any]] = lead["outbox"]
    ready = sorted((entry for entry in outbox if entry["due"] <= now_ms), key=lambda entry: entry["due"])
    lead["outbox"] = [entry for entry in outbox if entry["due"] > now_ms]
    return ready


def drop_journey_entries(lead: dict[str, Any], journey: str) -> list[dict[str, Any]]:
    """Remove and return the waiting commands of ``journey`` (it ended)."""
    dropped = [entry for entry in lead["outbox"] if entry["command"].get("journey") == journey]
    lead["outbox"] = [entry for entry in lead["outbox"] if entry["command"].get("journey") != journey]
    return dropped
