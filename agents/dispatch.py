"""Sending, deferring and dropping the commands of one lead under the delivery policy."""

from __future__ import annotations

from typing import Any, Callable

from nurture.agents.commands import Origin, make_command, refresh_times, step_command_id
from nurture.agents.journeys.spec import SEND_ACTIONS, Journey, Policy, Step
from nurture.agents.policy import defer, due_entries, judge, record_channel_send

# The profile field a message on each channel cannot go without.
CONTACT_FIELDS = {"email": "email", "sms": "phone"}

# (score, reasons) of the lead at a time; a None score means the lead's stored score.
Assessment = tuple[float | None, list[dict[str, Any]]]


class Dispatcher:
    """Applies the policy to each command of one lead and collects the ones that go out now.

    ``assess(at_ms)`` returns the lead's score and top reasons at a time. It is
    called once per distinct time, because contributions cost far more than a
    score. ``now_ms`` is the worker clock's time: commands are stamped with it,
    and the policy's ``stale_after`` is measured against it. Without it (offline
    runs) commands get the system time and nothing counts as stale.
    """

    def __init__(self, lead: dict[str, Any], policy: Policy, assess: Callable[[int], Assessment],
                 now_ms: int | None = None) -> None:
        self.lead = lead
        self.policy = policy
        self.now_ms = now_ms
        self.trigger_event_id = ""
        self.commands: list[dict[str, Any]] = []
        self.dropped: list[tuple[str, str]] = []  # (rule, reason)
        self.deferred: list[tuple[str, str, int]] = []  # (rule, reason, due)
        self._assess = assess
        self._assessments: dict[int, Assessment] = {}

    def assessment(self, at_ms: int) -> Assessment:
        if at_ms not in self._assessments:
            self._assessments[at_ms] = self._assess(at_ms)
        return self._assessments[at_ms]

    def reasons(self, at_ms: int) -> list[dict[str, Any]]:
        return self.assessment(at_ms)[1]

    def submit(self, command: dict[str, Any], at_ms: int, expires_hours: float) -> dict[str, Any]:
        """Send, defer or drop ``command``; return its status record for the journey run."""
        record = {"command_id": command["command_id"], "template": command["template"],
                  "status": "sent", "at": None, "due": None, "reason": None}
        if self._stale(at_ms):
            return self._drop(command, record, "stale")
        verdict = judge(self.lead, command["channel"], at_ms, self.policy)
        if verdict.action == "hold":
            return self._drop(command, record, verdict.reason)
        if verdict.action == "defer" and verdict.due - at_ms > self.policy.max_delay_ms:
            return self._drop(command, record, f"deferred_too_long:{verdict.reason}")
        if verdict.action == "defer":
            defer(self.lead, command, verdict, at_ms, expires_hours)
            self.deferred.append((command["rule"], verdict.reason, verdict.due))
            record.update(status="deferred", due=verdict.due, reason=verdict.reason)
            return record
        self._send(command, at_ms)
        record["at"] = at_ms
        return record

    def journey_send(self, journey: Journey, step: Step, run: dict[str, Any], at_ms: int) -> dict[str, Any]:
        """Build and submit the command of a send or hand-off step."""
        action = "handoff_sales" if step.type == "handoff" else SEND_ACTIONS[step.channel]
        origin = Origin(
            command_id=step_command_id(self.lead["lead_id"], journey.name, run["entry"], step.id),
            rule=f"{journey.name}/{step.id}", trigger_event_id=self.trigger_event_id or f"due:{at_ms}",
            event_time=at_ms, journey=journey.name, step=step.id,
        )
        contact = CONTACT_FIELDS.get(step.channel)
        if contact is not None and not self.lead["profile"].get(contact):
            record = {"command_id": origin.command_id, "template": step.template, "status": "sent",
                      "at": None, "due": None, "reason": None}
            return self._drop({"rule": origin.rule}, record, f"no_{contact}")
        score, reasons = self.assessment(at_ms)
        command = make_command(self.lead, origin, action, step.channel, step.template, step.expires_hours,
                               reasons, self.now_ms, score=score)
        return self.submit(command, at_ms, step.expires_hours)

    def release(self, due_ms: int) -> None:
        """Submit again the outbox commands due at ``due_ms``, each at its own due time."""
        for entry in due_entries(self.lead, due_ms):
            command, due = entry["command"], entry["due"]
            verdict = judge(self.lead, command["channel"], due, self.policy)
            if self._stale(due):
                verdict_reason = "stale"
            elif verdict.action == "defer" and verdict.due - entry["since"] <= self.policy.max_delay_ms:
                self.lead["outbox"].append({**entry, "due": verdict.due, "reason": verdict.reason})
                self.deferred.append((command["rule"], verdict.reason, verdict.due))
                continue
            elif verdict.action == "send":
                refresh_times(command, entry["expires_hours"], self.now_ms)
                self._send(command, due)
                self._update_run(command, status="sent", at=due, reason=None)
                continue
            else:
                verdict_reason = verdict.reason if verdict.action == "hold" else f"deferred_too_long:{verdict.reason}"
            self.dropped.append((command["rule"], verdict_reason))
            self._update_run(command, status="dropped", at=None, reason=verdict_reason)

    def _stale(self, at_ms: int) -> bool:
        limit = self.policy.stale_after_ms
        return limit is not None and self.now_ms is not None and self.now_ms - at_ms > limit

    def _drop(self, command: dict[str, Any], record: dict[str, Any], reason: str) -> dict[str, Any]:
        self.dropped.append((command["rule"], reason))
        record.update(status="dropped", reason=reason)
        return record

    def _send(self, command: dict[str, Any], at_ms: int) -> None:
        record_channel_send(self.lead, command["channel"], at_ms)
        self.commands.append(command)

    def _update_run(self, command: dict[str, Any], **changes: Any) -> None:
        run = self.lead["journeys"].get(command.get("journey") or "")
        sent = run["sends"].get(command["step"]) if run else None
        if sent is not None and sent["command_id"] == command["command_id"]:
            sent.update(changes)
