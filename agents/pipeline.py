"""Processing of one valid event: de-duplicate, update, score, decide, build commands.

This is plain code without Faust, so the agent, the tests and offline tools run
the same steps. The caller loads and stores the lead row and publishes commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nurture.agents.commands import build_command
from nurture.agents.gate import hold_reason
from nurture.agents.rules import Rule, evaluate
from nurture.agents.state import record_score, record_send, remember_event
from nurture.schemas.records import Event
from nurture.scoring import features
from nurture.scoring.model import LeadModel

PROFILE_FIELDS = ("email", "first_name", "last_name", "phone", "country", "time_zone")


@dataclass
class Runtime:
    """The model and rules the worker loads at start."""

    model: LeadModel
    rules: list[Rule]
    recent_event_ids: int = 64


@dataclass
class Outcome:
    duplicate: bool = False
    score: float | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)
    held_back: list[tuple[str, str]] = field(default_factory=list)  # (rule, reason)


def process_event(lead: dict[str, Any], event: Event, runtime: Runtime,
                  now_ms: int | None = None) -> Outcome:
    """Apply ``event`` to ``lead`` in place and return the commands it produces."""
    if not remember_event(lead, event.event_id, runtime.recent_event_ids):
        return Outcome(duplicate=True)

    _update_profile(lead, event)
    features.update(lead["features"], event)
    row = features.vector(lead["features"], event.event_time)
    scored = runtime.model.score([row])[0]
    previous = record_score(lead, event.event_time, scored.score, runtime.model.version)

    outcome = Outcome(score=scored.score)
    reasons: list[dict[str, Any]] | None = None
    for decision in evaluate(runtime.rules, lead, event, previous, scored.score):
        reason = hold_reason(lead, decision, event.event_time)
        if reason is not None:
            outcome.held_back.append((decision.rule.name, reason))
            continue
        if reasons is None:
            # Contributions cost far more than a score, so only commands pay for them.
            reasons = runtime.model.explain(row)
        command = build_command(lead, decision, event, reasons, now_ms)
        record_send(lead, decision.send_key, decision.rule.channel, event.event_time,
                    command["command_id"])
        if decision.follows_up is not None:
            lead["sends"][decision.follows_up]["followed_up"] = True
        if decision.rule.once:
            lead["fired_once"].append(decision.rule.name)
        outcome.commands.append(command)

    return outcome


def _update_profile(lead: dict[str, Any], event: Event) -> None:
    if event.kind != "form":
        return
    submitted = event.attrs.get("fields") or {}
    for name in PROFILE_FIELDS:
        value = submitted.get(name)
        if value:
            lead["profile"][name] = value
