"""Sending, deferring and releasing the commands of one lead under the delivery policy."""

from __future__ import annotations

from typing import Any, Callable

from nurture.agents.commands import Origin, make_command, refresh_times, step_command_id
from nurture.agents.journeys.spec import SEND_ACTIONS, Journey, Policy, Step
from nurture.agents.policy import defer, due_entries, judge, record_channel_send

# The profile field a message on each channel cannot go without.
CONTACT_FIELDS = {"email": "email", "sms": "phone"}


class Dispatcher:
    """Applies the policy to each command of one lead and collects the ones that go out now.

    ``reasons`` returns the score's top reasons; it is called at most once,
    because contributions cost far more than a score.
    """

    def __init__(self, lead: dict[str, Any], policy: Policy, reasons: Callable[[], list[dict[str, Any]]],
                 now_ms: int | None = None) -> None:
        self.lead = lead
        self.policy = policy
        self.now_ms = now_ms
        self.trigger_event_id = ""
        self.commands: list[dict[str, Any]] = []
        self.held: list[tuple[str, str]] = []  # (rule, reason)
        self.deferred: list[tuple[str, str, int]] = []  # (rule, reason, due)
        self._reasons_source = reasons
        self._reasons: list[dict[str, Any]] | None = None

    def reasons(self) -> list[dict[str, Any]]:
        if self._reasons is None:
            self._reasons = self._reasons_source()
        return self._reasons

    def submit(self, command: dict[str, Any], at_ms: int, expires_hours: float) -> dict[str, Any]:
        """Send, defer or hold ``command``; return its status record for the journey run."""
        verdict = judge(self.lead, command["channel"], at_ms, self.policy)
        status = {"send": "sent", "defer": "deferred", "hold": "held"}[verdict.action]
        record = {"command_id": command["command_id"], "template": command["template"],
                  "status": status, "at": None, "due": verdict.due}
        if verdict.action == "defer" and verdict.due - at_ms > self.policy.max_delay_ms:
            record["status"] = "held"
            self.held.append((command["rule"], f"deferred_too_long:{verdict.reason}"))
        elif verdict.action == "defer":
            defer(self.lead, command, verdict, at_ms, expires_hours)
            self.deferred.append((command["rule"], verdict.reason, verdict.due))
        elif verdict.action == "hold":
            self.held.append((command["rule"], verdict.reason))
        else:
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
            self.held.append((origin.rule, f"no_{contact}"))
            return {"command_id": origin.command_id, "template": step.template, "status": "held",
                    "at": None, "due": None}
        command = make_command(self.lead, origin, action, step.channel, step.template, step.expires_hours,
                               self.reasons(), self.now_ms)
        return self.submit(command, at_ms, step.expires_hours)

    def release(self, now_ms: int) -> None:
        """Submit again the outbox commands due at ``now_ms``, each at its own due time."""
        for entry in due_entries(self.lead, now_ms):
            command, due = entry["command"], entry["due"]
            verdict = judge(self.lead, command["channel"], due, self.policy)
            if verdict.action == "defer" and verdict.due - entry["since"] <= self.policy.max_delay_ms:
                self.lead["outbox"].append({**entry, "due": verdict.due, "reason": verdict.reason})
                self.deferred.append((command["rule"], verdict.reason, verdict.due))
                continue
            if verdict.action == "send":
                refresh_times(command, entry["expires_hours"], self.now_ms)
                self._send(command, due)
                self._update_run(command, "sent", due)
                continue
            reason = verdict.reason if verdict.action == "hold" else f"deferred_too_long:{verdict.reason}"
            self.held.append((command["rule"], reason))
            self._update_run(command, "held", None)

    def _send(self, command: dict[str, Any], at_ms: int) -> None:
        record_channel_send(self.lead, command["channel"], at_ms)
        self.commands.append(command)

    def _update_run(self, command: dict[str, Any], status: str, at_ms: int | None) -> None:
        run = self.lead["journeys"].get(command.get("journey") or "")
        sent = run["sends"].get(command["step"]) if run else None
        if sent is not None and sent["command_id"] == command["command_id"]:
            sent.update(status=status, at=at_ms)
