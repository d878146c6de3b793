"""Delivery feedback: what delivery workers report about the commands they handled."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nurture.agents.journeys.engine import note_engagement
from nurture.schemas.records import Event

DELIVERY_HISTORY_LENGTH = 20


def apply_feedback(lead: dict[str, Any], feedback: Event) -> str | None:
    """Record one delivery outcome; return "channel_blocked" when it stops a channel."""
    attrs = feedback.attrs
    deliveries: list[dict[str, Any]] = lead["deliveries"]
    deliveries.append({
        "command_id": attrs["command_id"], "channel": attrs["channel"], "status": attrs["status"],
        "bounce": attrs.get("bounce"), "at": feedback.event_time,
    })
    deliveries.sort(key=lambda item: item["at"])
    del deliveries[:-DELIVERY_HISTORY_LENGTH]
    _mark_journey_send(lead, attrs["command_id"], attrs["status"], attrs.get("bounce"))

    if attrs["status"] == "opened":
        # An open reported by the delivery side counts like a tracking-pixel open.
        note_engagement(lead, replace(feedback, kind="open", attrs={"command_id": attrs["command_id"]}))
    if attrs["status"] == "bounced" and attrs.get("bounce") == "hard" and attrs["channel"] not in lead["blocked"]:
        lead["blocked"][attrs["channel"]] = {
            "reason": "hard_bounce", "at": feedback.event_time, "command_id": attrs["command_id"],
        }
        return "channel_blocked"
    return None


def _mark_journey_send(lead: dict[str, Any], command_id: str, status: str, bounce: str | None) -> None:
    for run in lead["journeys"].values():
        for sent in run["sends"].values():
            if sent["command_id"] == command_id:
                sent["delivery"] = status
                sent["bounce"] = bounce
