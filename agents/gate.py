"""The one place that decides whether a command may be sent to a lead.

Every decision passes through ``hold_reason`` before a command is built. A
non-empty reason keeps the command back, and the agent logs it at debug level.
"""

from __future__ import annotations

from typing import Any

from nurture.agents.rules import Decision

MS_PER_HOUR = 3_600_000


def hold_reason(lead: dict[str, Any], decision: Decision, at_ms: int) -> str | None:
    """Return why ``decision`` must not produce a command now, or None to send it.

    ``at_ms`` is the trigger event's time, so a replayed history gets the same
    results as the live stream did.
    """
    rule = decision.rule
    if rule.once and rule.name in lead["fired_once"]:
        return "already_fired_once"
    previous = lead["sends"].get(decision.send_key)
    if previous is not None and at_ms - previous["at"] < rule.cooldown_hours * MS_PER_HOUR:
        return "cooldown"
    if rule.channel == "email" and not lead["profile"].get("email"):
        return "no_email_address"
    if rule.action == "handoff_sales" and lead.get("stage") in ("sales_qualified", "customer"):
        return "already_sales_qualified"  # a journey or another rule handed the lead over

    return None
