"""Consent per channel and purpose: applying grants and withdrawals, and the gate of every command.

A lead's consent state keeps, per channel and purpose, the latest change by
event time. A withdrawal and a grant at the same millisecond resolve to the
withdrawal. A command may leave only while the lead's state contains a grant for
the channel it needs and the configured purpose, given after the lead's
``consent_floor`` (the time its address was last erased, when it was).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nurture.schemas.records import Event

CHANNELS = ("email", "sms", "push", "phone")
SOURCES = ("form", "preference_centre", "import")


@dataclass(frozen=True)
class Requirement:
    """The consent a command needs: the purpose, and which consent channel a hand-off uses."""

    purpose: str = "marketing"
    handoff_channel: str = "phone"

    def needed(self, command_channel: str) -> str:
        """Return the consent channel a command on ``command_channel`` needs."""
        return self.handoff_channel if command_channel == "crm" else command_channel


def apply_consent(lead: dict[str, Any], event: Event) -> bool:
    """Fold a consent change into the lead's state; return True when it became the current one."""
    attrs = event.attrs
    purposes: dict[str, Any] = lead["consent"].setdefault(attrs["channel"], {})
    current = purposes.get(attrs["purpose"])
    if current is not None:
        if event.event_time < current["at"]:
            return False  # an older change arriving late; the ledger still records it
        if event.event_time == current["at"] and not current["granted"]:
            return False
    purposes[attrs["purpose"]] = {
        "granted": bool(attrs["granted"]), "at": event.event_time, "source": attrs["source"],
        "text_version": attrs["text_version"], "event_id": event.event_id,
    }
    return True


def form_consents(form: Event) -> list[Event]:
    """Return the consent changes of a form's consent boxes, as consent events with source form."""
    return [
        Event("consent", f"{form.event_id}:{box['channel']}:{box['purpose']}", form.lead_id, form.event_time,
              form.produced_at, {**box, "source": "form"})
        for box in form.attrs.get("consents") or ()
    ]


def missing_consent(lead: dict[str, Any], command_channel: str, requirement: Requirement) -> str | None:
    """Return why a command on ``command_channel`` may not leave, or None when consent allows it."""
    channel = requirement.needed(command_channel)
    state = lead["consent"].get(channel, {}).get(requirement.purpose)
    if state is None:
        return f"no_consent:{channel}/{requirement.purpose}"
    if not state["granted"]:
        return f"consent_withdrawn:{channel}/{requirement.purpose}"
    floor = lead.get("consent_floor")
    if floor is not None and state["at"] <= floor:
        return f"consent_before_erasure:{channel}/{requirement.purpose}"
    return None
