"""Building and checking the steps of one journey. Private to ``loader.py``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._checks import Place, Table, parse_clock
from .spec import DAY_MS, ENGAGEMENTS, MESSAGE_CHANNELS, MINUTE_MS, STAGES, STEP_TYPES, Step

END = "end"  # the `next`, `then` or `else` value that ends the journey
MAX_WAIT_MS = 60 * DAY_MS  # maximum wait duration and branch window
DEFAULT_EXPIRES_MS = int(Step.expires_hours * 60 * MINUTE_MS)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Steps that take no time: a loop made only of these would repeat forever at one instant.
INSTANT_TYPES = ("send", "handoff", "stage")

_STEP_KEYS = ("id", "next", *STEP_TYPES)
_ACTION_KEYS = {
    "send": ("channel", "template", "expires"),
    "wait": ("duration", "until"),
    "branch": ("engaged", "step", "within", "then", "else"),
    "handoff": ("template",),
}


@dataclass
class _Draft:
    """A step read from the file whose targets are not yet resolved to step ids."""

    place: Place
    table: Table
    fields: dict[str, Any]
    targets: dict[str, str | None]  # Step field (next, then, otherwise) -> value in the file, or None if absent


def build_steps(place: Place, raw_steps: list[Any]) -> tuple[Step, ...]:
    """Build and check the steps of the journey at ``place``."""
    drafts = []
    for index, raw in enumerate(raw_steps):
        step_place = place.within(f"step {index + 1}", ("steps", index))
        draft = _draft(step_place, raw)
        draft.fields["line"] = step_place.header_line()  # None for a step written inline
        drafts.append(draft)
    _check_unique_ids(drafts)
    ids = [draft.fields["id"] for draft in drafts]
    steps = tuple(_resolve(draft, ids, index) for index, draft in enumerate(drafts))

    by_id = {step.id: (step, draft) for step, draft in zip(steps, drafts)}
    branches = [(step, draft) for step, draft in zip(steps, drafts) if step.type == "branch"]
    for step, draft in branches:
        _check_branch_watches_send(step, draft, by_id)
    _check_no_instant_loop(steps, by_id)
    _check_all_reachable(steps, by_id)
    for step, draft in branches:
        _check_branch_follows_send(step, draft, by_id)

    return steps


def _draft(place: Place, raw: Any) -> _Draft:
    if not isinstance(raw, dict):
        raise place.error(f"expected a [[journeys.steps]] table, got {raw!r}")
    step_id = Table(place, raw).text("id")
    place = place.named(step_id)
    table = Table(place, raw)
    if step_id == END:
        raise table.fail("id", f"{END!r} is reserved for ending the journey; choose another id")
    table.check_keys(_STEP_KEYS)

    actions = [key for key in STEP_TYPES if table.has(key)]
    if not actions:
        raise place.error(f"a step needs one of the keys {', '.join(STEP_TYPES)}")
    if len(actions) > 1:
        raise place.error(f"keys {actions[0]!r} and {actions[1]!r} are both set; "
                          "a step does one thing, so split it into two steps")
    action = actions[0]

    fields = {"id": step_id, "type": action, **_ACTION_READERS[action](table)}
    if action == "branch":
        if table.has("next"):
            raise table.fail("next", "a branch goes on to 'then' or 'else'; remove 'next'")
        branch = table.table("branch")
        targets = {"then": branch.text("then", None), "otherwise": branch.text("else", None)}
    else:
        targets = {"next": table.text("next", None)}
    return _Draft(place, table, fields, targets)


def _send(table: Table) -> dict[str, Any]:
    send = table.table("send")
    send.check_keys(_ACTION_KEYS["send"])
    expires_ms = send.duration("expires", default=DEFAULT_EXPIRES_MS)
    return {"channel": send.choice("channel", MESSAGE_CHANNELS), "template": send.text("template"),
            "expires_hours": expires_ms / (60 * MINUTE_MS)}


def _wait(table: Table) -> dict[str, Any]:
    wait = table.table("wait")
    wait.check_keys(_ACTION_KEYS["wait"])
    if wait.has("duration") == wait.has("until"):
        raise table.fail("wait", "set exactly one of 'duration' (such as '2d') or 'until' (such as 'tuesday 10:00')")
    if wait.has("duration"):
        return {"duration_ms": wait.duration("duration", maximum=MAX_WAIT_MS)}
    return _until(wait)


def _until(wait: Table) -> dict[str, Any]:
    """Read ``until = "tuesday 10:00"`` (a weekday and a time) or ``until = "10:00"`` (the next such time)."""
    text = wait.text("until")
    words = text.lower().split()
    weekday = None
    if len(words) == 2:
        weekday = _weekday(words[0])
        if weekday is None:
            raise wait.fail("until", f"{words[0]!r} in {text!r} is not a weekday; use monday to sunday or mon to sun")
    elif len(words) != 1:
        raise wait.fail("until", f"invalid time {text!r}; write a weekday and a time such as 'tuesday 10:00', "
                                 "or a time such as '10:00'")
    try:
        hour, minute = parse_clock(words[-1])
    except ValueError as exc:
        raise wait.fail("until", str(exc)) from None
    return {"weekday": weekday, "hour": hour, "minute": minute}


def _weekday(word: str) -> int | None:
    for number, name in enumerate(WEEKDAYS):
        if word in (name, name[:3]):
            return number
    return None


def _branch(table: Table) -> dict[str, Any]:
    branch = table.table("branch")
    branch.check_keys(_ACTION_KEYS["branch"])
    return {"engaged": branch.choice("engaged", ENGAGEMENTS), "step": branch.text("step"),
            "within_ms": branch.duration("within", maximum=MAX_WAIT_MS)}


def _handoff(table: Table) -> dict[str, Any]:
    handoff = table.table("handoff")
    handoff.check_keys(_ACTION_KEYS["handoff"])
    return {"channel": "crm", "template": handoff.text("template", None)}


def _stage(table: Table) -> dict[str, Any]:
    return {"stage": table.choice("stage", STAGES)}


_ACTION_READERS = {"send": _send, "wait": _wait, "branch": _branch, "handoff": _handoff, "stage": _stage}


def _check_unique_ids(drafts: list[_Draft]) -> None:
    first_index: dict[str, int] = {}
    for index, draft in enumerate(drafts):
        step_id = draft.fields["id"]
        if step_id in first_index:
            raise draft.table.fail("id", f"duplicate step id {step_id!r}; step {first_index[step_id] + 1} "
                                         "already uses it")
        first_index[step_id] = index


def _resolve(draft: _Draft, ids: list[str], index: int) -> Step:
    """Build the Step, resolving each target to a step id, or None to end the journey."""
    following = ids[index + 1] if index + 1 < len(ids) else None
    resolved = {"next": None}
    for field_name, target in draft.targets.items():
        key = {"otherwise": "branch.else", "then": "branch.then"}.get(field_name, field_name)
        if target is None:
            resolved[field_name] = following
        elif target == END:
            resolved[field_name] = None
        elif target in ids:
            resolved[field_name] = target
        else:
            raise draft.table.fail(key, f"no step {target!r} in this journey; use one of {', '.join(ids)} or {END!r}")
    return Step(**draft.fields, **resolved)


def _successors(step: Step) -> Iterator[str]:
    targets = (step.then, step.otherwise) if step.type == "branch" else (step.next,)
    return (target for target in targets if target is not None)


def _reachable(start: str, by_id: dict[str, tuple[Step, _Draft]]) -> set[str]:
    """Return the ids of the steps that a lead at ``start`` can go on to, including ``start``."""
    seen = {start}
    pending = [start]
    while pending:
        for target in _successors(by_id[pending.pop()][0]):
            if target not in seen:
                seen.add(target)
                pending.append(target)
    return seen


def _check_branch_watches_send(step: Step, draft: _Draft, by_id: dict[str, tuple[Step, _Draft]]) -> None:
    if step.step not in by_id:
        raise draft.table.fail("branch.step", f"no step {step.step!r} in this journey; name a send step")
    watched = by_id[step.step][0]
    if watched.type != "send":
        raise draft.table.fail("branch.step", f"{step.step!r} is a {watched.type} step; name a send step, "
                                              "whose message the branch checks for engagement")


def _check_branch_follows_send(step: Step, draft: _Draft, by_id: dict[str, tuple[Step, _Draft]]) -> None:
    watched = by_id[step.step][0]
    if step.id not in _reachable(watched.id, by_id):
        raise draft.table.fail("branch.step", f"no path leads from step {watched.id!r} to this branch, so its "
                                              "message is never sent before the branch runs")


def _check_no_instant_loop(steps: tuple[Step, ...], by_id: dict[str, tuple[Step, _Draft]]) -> None:
    """Reject a loop of send, handoff and stage steps, which would repeat forever at one instant.

    Each of these steps has one successor (``next``), so following ``next`` from
    every step finds every such loop.
    """
    order = {step.id: index for index, step in enumerate(steps)}
    finished: set[str] = set()
    for start in steps:
        path: list[str] = []
        current: Step | None = start
        while current is not None and current.type in INSTANT_TYPES and current.id not in finished:
            if current.id in path:
                loop = path[path.index(current.id):]
                first = min(loop, key=order.__getitem__)
                loop = loop[loop.index(first):] + loop[:loop.index(first)]
                raise by_id[first][1].place.error(
                    f"the loop {' -> '.join(map(repr, [*loop, first]))} has no wait or branch step, so a lead would "
                    "repeat it forever at one instant; add a wait step to the loop or change a 'next'"
                )
            path.append(current.id)
            current = by_id[current.next][0] if current.next is not None else None
        finished.update(path)


def _check_all_reachable(steps: tuple[Step, ...], by_id: dict[str, tuple[Step, _Draft]]) -> None:
    reached = _reachable(steps[0].id, by_id)
    for step in steps:
        if step.id not in reached:
            raise by_id[step.id][1].place.error(
                f"no step leads to this one from the first step {steps[0].id!r}, so it never runs; "
                "point a 'next', 'then' or 'else' at it, or remove it"
            )
