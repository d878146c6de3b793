"""Campaign figures per journey step, rule and template, for ``nurture report campaigns``.

The report reads ``nurture.commands``, ``nurture.feedback`` and the event
topics and gives one row per key, with nine counts and seven rates. The
definitions below are the contract that ``docs/reporting.md`` explains to BI users.

Row key:

- ``journey``: the command's journey, or ``-`` for a command of a rule;
- ``rule_or_step``: the rule's name, or the journey step's id;
- ``template``: the command's template, or ``-`` for a sales hand-off, which has none.

Command time is ``created_at`` by default: the time the engine published the
command, so a command held back by quiet hours or a cap counts when it went out.
``event_time`` (the time of the trigger event, or the due time of a journey
wait) is the choice for a replayed history, whose commands are created long
after their events. The chosen time decides the range, the start of the
conversion window and which command a template names.

An open or a click names a command by its ``command_id``. One without a
``command_id`` but with a ``template`` names the lead's latest command of that
template whose command time is at or before the event's time. A ``command_id``
that matches no command names nothing.

- commands: distinct command ids whose command time is in ``[since, until)``,
  whatever happened to them after publishing. A command published twice (a
  worker retried a batch) counts once, with the fields of its earliest
  ``created_at``. Every other count is a subset of these commands.
- sent, delivered, bounced, failed: commands with at least one feedback record
  of that status (``bounced`` of either bounce kind). Each status counts on its
  own, so one command can count as both sent and bounced when the delivery
  side reports a bounce after the send.
- opened: commands named by an open event or a click event (a click on a
  link in a message means it was opened, as the worker counts it), or with a
  feedback record of status ``opened``. Repeated opens count once.
- clicked: commands named by a click event, leaving out clicks on the
  unsubscribe link, which email platforms keep out of click rates too.
- converted: commands whose lead has a conversion (a form event with
  ``conversion`` true) later than the command time and at most
  ``conversion_days`` after it.
- unsubscribed: commands named by a click event whose page is ``unsubscribe``.
- rates: delivered, bounced, failed, opened, clicked, converted and
  unsubscribed divided by commands. Every row has at least one command, so no
  rate divides by zero.

Feedback and events count whatever their own time, so the figures of a range
that ended recently still grow as opens and conversions arrive.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from nurture.schemas.records import Event

DAY_MS = 86_400_000
TIME_FIELDS = ("created_at", "event_time")
NO_VALUE = "-"  # journey of a rule's command, template of a hand-off
UNSUBSCRIBE_PAGE = "unsubscribe"

KEY_COLUMNS = ("journey", "rule_or_step", "template")
COUNT_COLUMNS = ("commands", "sent", "delivered", "bounced", "failed", "opened", "clicked", "converted",
                 "unsubscribed")
# Feedback statuses (schemas/feedback.avsc) that have a count column of the same name.
FEEDBACK_COUNT_STATUSES = ("sent", "delivered", "bounced", "failed")
# Each rate column with the count that it divides by commands.
RATE_COLUMNS = {
    "delivery_rate": "delivered",
    "bounce_rate": "bounced",
    "failure_rate": "failed",
    "open_rate": "opened",
    "click_rate": "clicked",
    "conversion_rate": "converted",
    "unsubscribe_rate": "unsubscribed",
}
COLUMNS = (*KEY_COLUMNS, *COUNT_COLUMNS, *RATE_COLUMNS)


class InvalidCommand(ValueError):
    """A record on the command topic that lacks a field the report needs."""


@dataclass(frozen=True)
class SentCommand:
    """The fields of one command that the report uses."""

    command_id: str
    lead_id: str
    key: tuple[str, str, str]  # (journey, rule_or_step, template)
    created_at: int  # epoch milliseconds UTC
    event_time: int  # epoch milliseconds UTC

    @classmethod
    def from_record(cls, record: Any) -> "SentCommand":
        """Build from a decoded command; raise InvalidCommand naming a missing or mistyped field."""
        if not isinstance(record, dict):
            raise InvalidCommand("the command is not a JSON object")
        for name in ("command_id", "lead_id", "rule"):
            if not isinstance(record.get(name), str) or not record[name]:
                raise InvalidCommand(f"the command has no {name}")
        for name in ("created_at", "event_time"):
            if not isinstance(record.get(name), int) or isinstance(record[name], bool):
                raise InvalidCommand(f"the command's {name} is not epoch milliseconds")
        for name in ("journey", "step", "template"):
            if record.get(name) is not None and not isinstance(record[name], str):
                raise InvalidCommand(f"the command's {name} is not text")

        journey = record.get("journey")
        if journey:
            key = (journey, record.get("step") or record["rule"], record.get("template") or NO_VALUE)
        else:
            key = (NO_VALUE, record["rule"], record.get("template") or NO_VALUE)
        return cls(record["command_id"], record["lead_id"], key, record["created_at"], record["event_time"])

    def time(self, time_field: str) -> int:
        return self.created_at if time_field == "created_at" else self.event_time


@dataclass(frozen=True)
class ReportWindow:
    """The commands a report counts and how long a conversion may follow one."""

    since_ms: int | None = None  # inclusive, epoch milliseconds UTC
    until_ms: int | None = None  # exclusive
    conversion_days: float = 7.0
    time_field: str = "created_at"

    def __post_init__(self) -> None:
        if self.time_field not in TIME_FIELDS:
            raise ValueError(f"time_field must be one of {', '.join(TIME_FIELDS)}, got {self.time_field!r}")
        if self.conversion_days <= 0:
            raise ValueError(f"conversion_days must be more than 0, got {self.conversion_days}")

    def contains(self, at_ms: int) -> bool:
        after_since = self.since_ms is None or at_ms >= self.since_ms
        before_until = self.until_ms is None or at_ms < self.until_ms
        return after_since and before_until


@dataclass
class CampaignRow:
    journey: str
    rule_or_step: str
    template: str
    commands: int = 0
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    failed: int = 0
    opened: int = 0
    clicked: int = 0
    converted: int = 0
    unsubscribed: int = 0

    def rate(self, count_column: str) -> float:
        return getattr(self, count_column) / self.commands if self.commands else 0.0

    def as_dict(self) -> dict[str, str | int | float]:
        """Return the row's values under the names of ``COLUMNS``, in that order."""
        values: dict[str, str | int | float] = {
            name: getattr(self, name) for name in (*KEY_COLUMNS, *COUNT_COLUMNS)
        }
        for rate_column, count_column in RATE_COLUMNS.items():
            values[rate_column] = self.rate(count_column)
        return values


@dataclass(frozen=True)
class _Engagement:
    """An open or a click that may name a command."""

    lead_id: str
    command_id: str | None
    template: str | None
    at: int
    unsubscribe: bool = False


@dataclass
class CampaignTally:
    """Collects commands, feedback and events, then counts them per row with ``rows``."""

    commands: dict[str, SentCommand] = field(default_factory=dict)
    repeated_commands: int = 0  # records whose command_id an earlier record had
    opens: list[_Engagement] = field(default_factory=list)
    clicks: list[_Engagement] = field(default_factory=list)
    # Command ids per feedback status of FEEDBACK_COUNT_STATUSES.
    feedback_ids: dict[str, set[str]] = field(
        default_factory=lambda: {status: set() for status in FEEDBACK_COUNT_STATUSES})
    opened_ids: set[str] = field(default_factory=set)  # from feedback status opened
    conversions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add_command(self, record: Any) -> None:
        """Add one decoded command record; raise InvalidCommand when it cannot be used."""
        command = SentCommand.from_record(record)
        earlier = self.commands.get(command.command_id)
        if earlier is not None:
            self.repeated_commands += 1
            if earlier.created_at <= command.created_at:
                return
        self.commands[command.command_id] = command

    def add_event(self, event: Event) -> None:
        """Add an open, click, form or feedback event; events that count for nothing are dropped."""
        attrs = event.attrs
        if event.kind == "feedback":
            if attrs["status"] in self.feedback_ids:
                self.feedback_ids[attrs["status"]].add(attrs["command_id"])
            elif attrs["status"] == "opened":
                self.opened_ids.add(attrs["command_id"])
        elif event.kind == "form":
            if event.is_conversion:
                self.conversions[event.lead_id].append(event.event_time)
        elif event.kind in ("open", "click") and (attrs.get("command_id") or attrs.get("template")):
            unsubscribe = event.kind == "click" and attrs.get("page") == UNSUBSCRIBE_PAGE
            engagement = _Engagement(event.lead_id, attrs.get("command_id"), attrs.get("template"),
                                     event.event_time, unsubscribe)
            if event.kind == "open":
                self.opens.append(engagement)
            else:
                self.clicks.append(engagement)

    def rows(self, window: ReportWindow) -> list[CampaignRow]:
        """Count the commands in ``window`` per key; rows are sorted by key."""
        names = _CommandNames(self.commands.values(), window.time_field)
        clicked = {names.resolve(e) for e in self.clicks if not e.unsubscribe}
        # A click on a link in a message, the unsubscribe link too, means it was opened,
        # as the worker counts it.
        opened = {names.resolve(e) for e in self.opens} | self.opened_ids | {names.resolve(e) for e in self.clicks}
        # NOTE: only the unsubscribe link counts. A withdrawal on events.consent after a
        # command is not tied to the command yet.
        unsubscribed = {names.resolve(e) for e in self.clicks if e.unsubscribe}
        conversions = {lead: sorted(times) for lead, times in self.conversions.items()}
        window_ms = round(window.conversion_days * DAY_MS)

        rows: dict[tuple[str, str, str], CampaignRow] = {}
        for command in self.commands.values():
            at = command.time(window.time_field)
            if not window.contains(at):
                continue
            row = rows.get(command.key)
            if row is None:
                row = rows[command.key] = CampaignRow(*command.key)
            row.commands += 1
            row.sent += command.command_id in self.feedback_ids["sent"]
            row.delivered += command.command_id in self.feedback_ids["delivered"]
            row.bounced += command.command_id in self.feedback_ids["bounced"]
            row.failed += command.command_id in self.feedback_ids["failed"]
            row.opened += command.command_id in opened
            row.clicked += command.command_id in clicked
            row.unsubscribed += command.command_id in unsubscribed
            row.converted += _converts(conversions.get(command.lead_id, []), at, window_ms)
        return [rows[key] for key in sorted(rows)]


class _CommandNames:
    """Finds the command an open or a click names."""

    def __init__(self, commands: Iterable[SentCommand], time_field: str) -> None:
        self.ids = set()
        sends: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for command in commands:
            self.ids.add(command.command_id)
            template = command.key[2]
            if template != NO_VALUE:
                sends[(command.lead_id, template)].append((command.time(time_field), command.command_id))
        self.times: dict[tuple[str, str], list[int]] = {}
        self.command_ids: dict[tuple[str, str], list[str]] = {}
        for pair, entries in sends.items():
            entries.sort()
            self.times[pair] = [at for at, _ in entries]
            self.command_ids[pair] = [command_id for _, command_id in entries]

    def resolve(self, engagement: _Engagement) -> str | None:
        """Return the id of the command ``engagement`` names, or None."""
        if engagement.command_id:
            return engagement.command_id if engagement.command_id in self.ids else None
        pair = (engagement.lead_id, engagement.template or "")
        position = bisect.bisect_right(self.times.get(pair, []), engagement.at)
        return self.command_ids[pair][position - 1] if position else None


def _converts(conversion_times: list[int], at: int, window_ms: int) -> bool:
    """Tell whether a time in the sorted ``conversion_times`` lies in (at, at + window_ms]."""
    position = bisect.bisect_right(conversion_times, at)
    return position < len(conversion_times) and conversion_times[position] <= at + window_ms
