"""A plain-text account of a lead's journeys: what each run waits for and when it moves next."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from nurture.agents.journeys.calendar import lead_zone
from nurture.agents.journeys.spec import Journey, JourneyBook, Step

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def describe_lead(lead: dict[str, Any], book: JourneyBook, now_ms: int) -> str:
    """Return a plain-text account of the lead's stage, journeys and waiting commands."""
    profile_zone = lead["profile"].get("time_zone")
    zone = lead_zone(profile_zone, book.policy.time_zone)
    when = _Times(zone, now_ms)
    stage = lead.get("stage") or "none"
    score = lead.get("score")
    lines = [
        f"Lead {lead['lead_id']}: stage {stage}, score {score:.1f}" if score is not None
        else f"Lead {lead['lead_id']}: stage {stage}, not scored yet",
        f"Time zone {zone.key} ({_zone_source(profile_zone, zone.key)})",
    ]
    for at, name, cause in lead.get("stage_history", []):
        lines.append(f"  stage {name} at {when.text(at)} ({cause})")
    for journey in book.journeys:
        lines.append("")
        lines.extend(_describe_run(journey, lead["journeys"].get(journey.name), lead, when))
    for name in sorted(set(lead["journeys"]) - {journey.name for journey in book.journeys}):
        run = lead["journeys"][name]
        lines.append("")
        lines.append(f"Journey {name}: run {run['entry']}, {run['status']}; not in the journey file "
                     f"{book.source}")
    if lead.get("outbox"):
        lines.append("")
        lines.append("Deferred commands:")
        for entry in sorted(lead["outbox"], key=lambda item: item["due"]):
            command = entry["command"]
            lines.append(f"  {command['rule']}: {command['action']} {command.get('template') or ''} "
                         f"waits for {entry['reason']} until {when.text(entry['due'])}")
    for channel, block in sorted(lead.get("blocked", {}).items()):
        lines.append(f"Channel {channel} blocked: {block['reason']} at {when.text(block['at'])}")
    return "\n".join(lines)


class _Times:
    def __init__(self, zone: Any, now_ms: int) -> None:
        self.zone = zone
        self.now_ms = now_ms

    def text(self, at_ms: int) -> str:
        moment = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc)
        local = moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M %Z")
        return f"{moment:%Y-%m-%d %H:%M} UTC ({local})"

    def relative(self, at_ms: int) -> str:
        if at_ms <= self.now_ms:
            return "due now"
        return "in " + duration_text(at_ms - self.now_ms)


def duration_text(milliseconds: int) -> str:
    """Return a duration in days, hours and minutes, such as "1 d 22 h"."""
    days, rest = divmod(milliseconds // 60_000, 1_440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(part for part in parts if part) or "under a minute"


def _describe_run(journey: Journey, run: dict[str, Any] | None, lead: dict[str, Any], when: _Times) -> list[str]:
    if run is None:
        return [f"Journey {journey.name}: not entered (trigger: {_trigger_text(journey)})"]
    head = f"Journey {journey.name}: run {run['entry']}, {run['status']}, entered {when.text(run['entered_at'])}"
    lines = [head]
    if run["status"] != "active":
        lines.append(f"  ended {when.text(run['ended_at'])}: {run['end_reason']}")
        if journey.reentry == "after_exit":
            lines.append(f"  may enter again from {when.text(run['ended_at'] + journey.reentry_after_ms)}")
    elif run["step"] not in {step.id for step in journey.steps}:
        lines.append(f"  at step {run['step']}, which the journey file no longer has; "
                     "the run ends when the worker next handles this lead")
    else:
        step = journey.step_by_id(run["step"])
        lines.append(f"  at step {step.id} ({step.type}): {_waiting_text(step, run, lead)}")
        if run.get("due") is not None:
            lines.append(f"  moves next at {when.text(run['due'])}, {when.relative(run['due'])}")
    for step_id in run["done"]:
        sent = run["sends"].get(step_id)
        lines.append(f"  done: {step_id}" + (f" ({_send_text(sent, when)})" if sent else ""))
    return lines


def _waiting_text(step: Step, run: dict[str, Any], lead: dict[str, Any]) -> str:
    if step.type == "wait" and step.duration_ms is not None:
        return f"waiting {duration_text(step.duration_ms)} from when the step was reached"
    if step.type == "wait":
        day = WEEKDAYS[step.weekday] if step.weekday is not None else "the next day at"
        return f"waiting until {day} {step.hour:02d}:{step.minute:02d} in the lead's time zone"
    if step.type == "branch":
        sent = run["sends"].get(step.step)
        status = f"that message is {sent['status']}" if sent else "that step has not run"
        return (f"waiting for the message of step {step.step} to be {step.engaged} "
                f"within {duration_text(step.within_ms)} of sending ({status}); "
                f"then {step.then or 'end'}, else {step.otherwise or 'end'}")
    return "about to run"


def _zone_source(profile_zone: Any, used: str) -> str:
    if profile_zone == used:
        return "from the profile"
    if profile_zone:
        return f"the policy default; the profile's {profile_zone!r} is not a valid IANA zone"
    return "the policy default"


def _send_text(sent: dict[str, Any], when: _Times) -> str:
    status = sent["status"] + (f": {sent['reason']}" if sent.get("reason") else "")
    parts = [f"command {sent['command_id']}", status] if sent.get("command_id") else [status]
    if sent.get("at") is not None:
        parts.append(f"at {when.text(sent['at'])}")
    for mark in ("opened", "clicked"):
        if sent.get(mark) is not None:
            parts.append(f"{mark} {when.text(sent[mark])}")
    if sent.get("delivery"):
        parts.append(f"delivery {sent['delivery']}")
        if sent.get("bounce"):
            parts[-1] += f" ({sent['bounce']})"
    return ", ".join(parts)


def _trigger_text(journey: Journey) -> str:
    trigger = journey.trigger
    if trigger.on == "event":
        where = ", ".join(f"{key} = {value!r}" for key, value in trigger.where.items())
        return f"event {'/'.join(trigger.kinds)}" + (f" where {where}" if where else "")
    if trigger.on == "score_crossed":
        return f"score crosses {trigger.threshold:g} {trigger.direction}"
    return f"stage changes to {trigger.stage}"
