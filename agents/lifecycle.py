"""Lifecycle stages of a lead: subscriber, lead, marketing-qualified, sales-qualified, customer.

Automatic moves only go up the ladder. A journey's ``stage`` step may set any
stage, also a lower one, because marketing sometimes resets a lead on purpose.
"""

from __future__ import annotations

from typing import Any

from nurture.agents.journeys.spec import STAGES, Lifecycle
from nurture.schemas.records import Event

STAGE_HISTORY_LENGTH = 20
# A form of this name from a lead with an email address makes it a subscriber; any
# other form makes such a lead a lead.
SUBSCRIBE_FORM = "newsletter"


def set_stage(lead: dict[str, Any], stage: str, at_ms: int, cause: str, *, upward_only: bool = True) -> bool:
    """Move ``lead`` to ``stage``; return True when the stage changed."""
    current = lead.get("stage")
    if current == stage:
        return False
    if upward_only and current is not None and STAGES.index(stage) <= STAGES.index(current):
        return False
    lead["stage"] = stage
    history: list[list[Any]] = lead.setdefault("stage_history", [])
    history.append([at_ms, stage, cause])
    del history[:-STAGE_HISTORY_LENGTH]
    return True


def stages_after_event(lead: dict[str, Any], event: Event, score: float, lifecycle: Lifecycle) -> list[str]:
    """Apply the automatic stage moves ``event`` and ``score`` cause; return the new stages in order."""
    changed = []
    at = event.event_time
    # The profile already contains this form's fields, so an address given earlier counts too.
    if event.kind == "form" and lead["profile"].get("email"):
        if event.attrs.get("form") == SUBSCRIBE_FORM:
            target, cause = "subscriber", f"form:{SUBSCRIBE_FORM}"
        else:
            target, cause = ("lead", f"form:{event.attrs.get('form')}") if lifecycle.lead_on_form else (None, "")
        if target and set_stage(lead, target, at, cause):
            changed.append(target)
    threshold = lifecycle.marketing_qualified_score
    if threshold is not None and score >= threshold and set_stage(lead, "marketing_qualified", at, "score"):
        changed.append("marketing_qualified")
    if lifecycle.customer_on_conversion and event.is_conversion and set_stage(lead, "customer", at, "conversion"):
        changed.append("customer")
    return changed
