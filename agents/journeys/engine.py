"""Running journeys for one lead: entry, steps, waits, branches and exit goals.

A run is a plain dict in the lead's row (``lead["journeys"][name]``), so it is
stored and recovered with the row. All times are the run's own clock: an event
moves a run at the event's time, and a wait that comes due moves it at its due
time. A replayed history therefore takes the same path as the live stream did.

The engine never builds commands itself. It calls ``Context.send`` for send and
hand-off steps, which applies the delivery policy, and records what came back,
so that a branch can later look at whether that message was opened or clicked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from nurture.agents.journeys.calendar import lead_zone, next_local_time
from nurture.agents.journeys.spec import STAGES, Condition, Journey, JourneyBook, Step
from nurture.agents.lifecycle import set_stage
from nurture.agents.policy import drop_journey_entries
from nurture.agents.rules import matches_where
from nurture.schemas.records import Event

# Send = (journey, step, run, at_ms) -> {"command_id", "template", "status": sent|deferred|dropped,
#                                         "at", "due", "reason"}
Send = Callable[[Journey, Step, dict[str, Any], int], dict[str, Any]]
MAX_STAGE_ROUNDS = 5  # stage changes that trigger journeys that change stages, and so on


@dataclass
class Context:
    lead: dict[str, Any]
    book: JourneyBook
    send: Send
    stage_changes: list[str] = field(default_factory=list)  # made by steps, not yet seen by triggers
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (journey, what, detail)


def on_event(ctx: Context, event: Event, previous_score: float | None, score: float,
             stages: list[str]) -> None:
    """Move every journey of the lead for ``event``, after its score and automatic stage moves."""
    note_engagement(ctx.lead, event)
    at = event.event_time
    retire_stale_runs(ctx, at)
    for journey in ctx.book.journeys:
        run = ctx.lead["journeys"].get(journey.name)
        if run is not None and run["status"] == "active":
            goal = _goal_met(journey, ctx.lead, event, score, stages)
            if goal is not None:
                _end(ctx, journey, run, at, "exited", goal)
            elif run.get("waiting") == "engagement":
                advance(ctx, journey, run, at)
        elif _triggered(journey.trigger, event, previous_score, score, stages):
            enter(ctx, journey, at, _cause(journey.trigger, event))
    _follow_stage_changes(ctx, at)


def on_due(ctx: Context, now_ms: int) -> None:
    """Move the runs whose wait is due at ``now_ms``, each at its own due time."""
    retire_stale_runs(ctx, now_ms)
    for journey in ctx.book.journeys:
        run = ctx.lead["journeys"].get(journey.name)
        if run is not None and run["status"] == "active" and run.get("due") is not None and run["due"] <= now_ms:
            at = run["due"]
            advance(ctx, journey, run, at)
            _follow_stage_changes(ctx, at)


def on_engagement(ctx: Context, at: int) -> None:
    """Let branches that wait for engagement look again, after feedback marked a message."""
    for journey in ctx.book.journeys:
        run = ctx.lead["journeys"].get(journey.name)
        if run is not None and run["status"] == "active" and run.get("waiting") == "engagement":
            advance(ctx, journey, run, at)
    _follow_stage_changes(ctx, at)


def retire_stale_runs(ctx: Context, at: int) -> None:
    """End active runs whose journey or current step the journey file no longer has."""
    names = {journey.name: journey for journey in ctx.book.journeys}
    for name, run in ctx.lead["journeys"].items():
        if run["status"] != "active":
            continue
        journey = names.get(name)
        if journey is None:
            _end(ctx, None, run, at, "exited", "journey_removed", name)
        elif run["step"] is not None and run["step"] not in {step.id for step in journey.steps}:
            _end(ctx, journey, run, at, "exited", f"step_removed:{run['step']}")


def enter(ctx: Context, journey: Journey, at: int, cause: str) -> bool:
    """Start a run of ``journey`` unless a run is active or re-entry is not allowed yet."""
    runs = ctx.lead["journeys"]
    previous = runs.get(journey.name)
    if previous is not None:
        if previous["status"] == "active":
            return False
        if journey.reentry == "never":
            ctx.log.append((journey.name, "entry_skipped", "reentry_never"))
            return False
        if at < previous["ended_at"] + journey.reentry_after_ms:
            ctx.log.append((journey.name, "entry_skipped", "reentry_after"))
            return False
    goal = _goal_met(journey, ctx.lead, None, ctx.lead.get("score") or 0.0, [])
    if goal is not None:
        ctx.log.append((journey.name, "entry_skipped", goal))
        return False
    runs[journey.name] = {
        "entry": (previous["entry"] + 1) if previous else 1,
        "status": "active", "cause": cause, "entered_at": at, "ended_at": None, "end_reason": None,
        "step": journey.steps[0].id, "since": at, "due": None, "waiting": None,
        "done": [], "sends": {},
    }
    ctx.log.append((journey.name, "entered", cause))
    advance(ctx, journey, runs[journey.name], at)
    return True


def advance(ctx: Context, journey: Journey, run: dict[str, Any], at: int) -> None:
    """Run steps from the current one until a step waits or the journey ends."""
    for _ in range(4 * len(journey.steps) + 4):  # the loader rejects cycles without a wait
        if run["status"] != "active":
            return
        if run["step"] is None:
            _end(ctx, journey, run, at, "completed", "last step")
            return
        step = journey.step_by_id(run["step"])
        if step.type in ("wait", "branch"):
            following = _check_wait(ctx, journey, step, run, at)
            if following is _WAITING:
                return
        else:
            _execute(ctx, journey, step, run, at)
            following = step.next
        run.update(step=following, since=at, due=None, waiting=None)
    raise RuntimeError(f"journey {journey.name!r} did not settle; a cycle of steps has no wait")


_WAITING = object()


def _check_wait(ctx: Context, journey: Journey, step: Step, run: dict[str, Any], at: int) -> Any:
    """Return the step after a finished wait or branch, or _WAITING with the run's due time set."""
    if step.type == "wait":
        due = run["due"] if run.get("waiting") == "time" else _wait_due(ctx, step, run["since"])
        if at >= due:
            return step.next
        run.update(due=due, waiting="time")
        return _WAITING

    sent = run["sends"].get(step.step)
    if sent is None or sent["status"] == "dropped":
        return step.otherwise  # the message never went out, so it cannot have been opened
    if _engaged(sent, step):
        return step.then
    start = sent["at"] if sent["status"] == "sent" else sent["due"]
    due = start + step.within_ms
    if sent["status"] == "sent" and at >= due:
        return step.otherwise
    run.update(due=due, waiting="engagement")
    return _WAITING


def _wait_due(ctx: Context, step: Step, since: int) -> int:
    if step.duration_ms is not None:
        return since + step.duration_ms
    zone = lead_zone(ctx.lead["profile"].get("time_zone"), ctx.book.policy.time_zone)
    return next_local_time(since, zone, step.hour, step.minute, step.weekday)


def _engaged(sent: dict[str, Any], step: Step) -> bool:
    if sent.get("at") is None:
        return False
    deadline = sent["at"] + step.within_ms
    opened = sent.get("opened") is not None and sent["opened"] <= deadline
    clicked = sent.get("clicked") is not None and sent["clicked"] <= deadline
    return {"opened": opened, "clicked": clicked, "engaged": opened or clicked}[step.engaged]


def _execute(ctx: Context, journey: Journey, step: Step, run: dict[str, Any], at: int) -> None:
    if step.id in run["done"]:
        ctx.log.append((journey.name, "step_skipped", f"{step.id} already ran in this run"))
        return
    run["done"].append(step.id)
    cause = f"journey:{journey.name}"
    if step.type == "stage":
        if set_stage(ctx.lead, step.stage, at, cause, upward_only=False):
            ctx.stage_changes.append(step.stage)
        return
    if step.type == "handoff":
        if at_least(ctx.lead.get("stage"), "sales_qualified"):
            # Sales has the lead already (a rule or another journey handed it over).
            run["sends"][step.id] = {"command_id": None, "template": step.template, "status": "dropped",
                                     "at": None, "due": None, "reason": "already_sales_qualified"}
            ctx.log.append((journey.name, "step_skipped", f"{step.id}: already_sales_qualified"))
            return
        if set_stage(ctx.lead, "sales_qualified", at, cause):
            ctx.stage_changes.append("sales_qualified")
    run["sends"][step.id] = ctx.send(journey, step, run, at)


def _end(ctx: Context, journey: Journey | None, run: dict[str, Any], at: int, status: str, reason: str,
         name: str | None = None) -> None:
    name = journey.name if journey is not None else name
    run.update(status=status, ended_at=at, end_reason=reason, due=None, waiting=None)
    ctx.log.append((name, status, reason))
    if status == "exited":
        # A lead that met a goal gets none of the run's messages still waiting to go out.
        for entry in drop_journey_entries(ctx.lead, name):
            sent = run["sends"].get(entry["command"]["step"])
            if sent is not None:
                sent.update(status="dropped", reason="journey_exited")
            ctx.log.append((name, "message_dropped", entry["command"]["command_id"]))


def _follow_stage_changes(ctx: Context, at: int) -> None:
    """Let stage changes made by steps end or start other journeys."""
    for _ in range(MAX_STAGE_ROUNDS):
        if not ctx.stage_changes:
            return
        stages, ctx.stage_changes = ctx.stage_changes, []
        for journey in ctx.book.journeys:
            run = ctx.lead["journeys"].get(journey.name)
            if run is not None and run["status"] == "active":
                goal = _goal_met(journey, ctx.lead, None, ctx.lead.get("score") or 0.0, stages)
                if goal is not None:
                    _end(ctx, journey, run, at, "exited", goal)
            elif journey.trigger.on == "stage_changed" and journey.trigger.stage in stages:
                enter(ctx, journey, at, f"stage:{journey.trigger.stage}")
    ctx.stage_changes = []


def _triggered(trigger: Condition, event: Event, previous: float | None, score: float,
               stages: list[str]) -> bool:
    if trigger.on == "event":
        return event.kind in trigger.kinds and matches_where(trigger.where, event)
    if trigger.on == "score_crossed":
        before = previous or 0.0
        if trigger.direction == "up":
            return before < trigger.threshold <= score
        return previous is not None and before >= trigger.threshold > score
    return trigger.stage in stages


def _cause(trigger: Condition, event: Event) -> str:
    if trigger.on == "event":
        return f"event:{event.kind}:{event.event_id}"
    if trigger.on == "score_crossed":
        return f"score_crossed:{trigger.threshold:g}:{trigger.direction}"
    return f"stage:{trigger.stage}"


def _goal_met(journey: Journey, lead: dict[str, Any], event: Event | None, score: float,
              stages: list[str]) -> str | None:
    """Return a description of the first exit goal the lead meets, or None."""
    for goal in journey.exits:
        if goal.on == "event" and event is not None and event.kind in goal.kinds \
                and matches_where(goal.where, event):
            return f"event:{event.kind}"
        if goal.on == "score_above" and score >= goal.threshold:
            return f"score_above:{goal.threshold:g}"
        if goal.on == "score_below" and lead.get("score") is not None and score < goal.threshold:
            return f"score_below:{goal.threshold:g}"
        if goal.on == "stage_reached" and at_least(lead.get("stage"), goal.stage):
            return f"stage_reached:{goal.stage}"
    return None


def at_least(stage: str | None, target: str) -> bool:
    """Return True when ``stage`` is ``target`` or a later stage."""
    return stage is not None and STAGES.index(stage) >= STAGES.index(target)


def note_engagement(lead: dict[str, Any], event: Event) -> None:
    """Mark the journey message an open or a click names, by command_id or else by template."""
    if event.kind not in ("open", "click"):
        return
    command = event.attrs.get("command_id")
    template = event.attrs.get("template")
    if not command and not template:
        return
    candidates = [
        sent for run in lead["journeys"].values() for sent in run["sends"].values()
        if sent.get("at") is not None and sent["at"] <= event.event_time
    ]
    named = [sent for sent in candidates if command and sent["command_id"] == command]
    if not named and template:
        by_template = [sent for sent in candidates if sent.get("template") == template]
        named = sorted(by_template, key=lambda sent: sent["at"])[-1:]
    # A click on a link in a message means the message was opened, too.
    marks = ("opened", "clicked") if event.kind == "click" else ("opened",)
    for sent in named:
        for mark in marks:
            if sent.get(mark) is None or event.event_time < sent[mark]:
                sent[mark] = event.event_time


def next_due(lead: dict[str, Any]) -> int | None:
    """Return the earliest time a run's wait or an outbox command comes due."""
    times = [run["due"] for run in lead["journeys"].values() if run["status"] == "active" and run.get("due")]
    times.extend(entry["due"] for entry in lead["outbox"])
    return min(times) if times else None
