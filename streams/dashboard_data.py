"""Aggregations behind the worker's dashboard, without Faust: rates, lead counts, command counts, timelines.

Everything here describes one worker: the commands it published and the lead rows
of the table partitions assigned to it.
"""

from __future__ import annotations

import unicodedata
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from nurture.agents.journeys.spec import STAGES
from nurture.streams.codecs import MAX_ID_LENGTH

SERIES_LENGTH = 60  # samples kept for the throughput and lag charts
SCORE_BINS = 10  # equal bins over the score range 0-100
NO_STAGE = "none"
FUNNEL_STAGES = (*STAGES, NO_STAGE)
RULE_JOURNEY = "-"  # the journey column of a command that a rule produced
LEADS_WITH_COMMANDS = 10_000  # leads whose latest commands are kept in memory
COMMANDS_PER_LEAD = 10
# Command fields kept in memory and shown on a lead's timeline. Personalisation,
# stage history and recent activity are left out, because they carry personal data or repeat the row.
COMMAND_SUMMARY_FIELDS = ("command_id", "rule", "journey", "step", "action", "channel", "template",
                          "event_time", "created_at", "score", "reasons")


@dataclass(frozen=True)
class Sample:
    """One point of the throughput and lag charts."""

    at_ms: int
    records_in_per_second: float
    commands_out_per_second: float
    consumer_lag: float


class ThroughputSeries:
    """The latest samples of the input and output rates and of the total consumer lag.

    Rates come from the growth of two counter totals between calls of ``add``.
    """

    def __init__(self, records_in_total: float, commands_out_total: float, monotonic_seconds: float,
                 length: int = SERIES_LENGTH) -> None:
        self.samples: deque[Sample] = deque(maxlen=length)
        self._previous = (monotonic_seconds, records_in_total, commands_out_total)

    def add(self, at_ms: int, monotonic_seconds: float, records_in_total: float, commands_out_total: float,
            consumer_lag: float) -> None:
        """Append a sample with the rates since the previous call, in records (or commands) per second."""
        since, records_before, commands_before = self._previous
        elapsed = monotonic_seconds - since
        if elapsed <= 0:
            return
        self._previous = (monotonic_seconds, records_in_total, commands_out_total)
        self.samples.append(Sample(
            at_ms=at_ms,
            records_in_per_second=max(records_in_total - records_before, 0.0) / elapsed,
            commands_out_per_second=max(commands_out_total - commands_before, 0.0) / elapsed,
            consumer_lag=consumer_lag,
        ))

    def to_json(self) -> list[dict[str, Any]]:
        return [{"at": sample.at_ms,
                 "records_in_per_second": round(sample.records_in_per_second, 3),
                 "commands_out_per_second": round(sample.commands_out_per_second, 3),
                 "consumer_lag": sample.consumer_lag}
                for sample in self.samples]


@dataclass
class LeadTally:
    """Counts over lead rows: leads per score bin and per lifecycle stage."""

    score_bins: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)
    unscored: int = 0
    stages: Counter[str] = field(default_factory=Counter)
    leads: int = 0
    unreadable: int = 0  # rows that are not a JSON object

    def add(self, payload: bytes) -> None:
        """Count one stored lead row (the JSON document of agents/state.py)."""
        try:
            row = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.unreadable += 1
            return
        if not isinstance(row, dict):
            self.unreadable += 1
            return
        self.leads += 1
        score = row.get("score")
        if isinstance(score, (int, float)):
            self.score_bins[score_bin_index(score)] += 1
        else:
            self.unscored += 1
        stage = row.get("stage")
        self.stages[stage if stage in STAGES else NO_STAGE] += 1

    def to_json(self) -> dict[str, Any]:
        width = 100 // SCORE_BINS
        return {
            "leads": self.leads,
            "scores": {
                "bins": [{"low": index * width, "high": (index + 1) * width, "leads": count}
                         for index, count in enumerate(self.score_bins)],
                "unscored": self.unscored,
            },
            "funnel": [{"stage": stage, "leads": self.stages.get(stage, 0)} for stage in FUNNEL_STAGES],
        }


def score_bin_index(score: float) -> int:
    """Return the bin index of a 0-100 score; the last bin includes 100."""
    return min(max(int(score // (100 / SCORE_BINS)), 0), SCORE_BINS - 1)


class CommandLog:
    """Counts of the commands this worker published, by journey and channel, and each lead's latest ones.

    The latest commands are kept for ``max_leads`` leads, least recently seen first out,
    so that a lead's timeline can show the reasons of commands the row keeps no copy of.
    """

    def __init__(self, max_leads: int = LEADS_WITH_COMMANDS, per_lead: int = COMMANDS_PER_LEAD) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.max_leads = max_leads
        self.per_lead = per_lead
        self._latest: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def observe(self, command: dict[str, Any]) -> None:
        """Count a published command and remember its summary for its lead."""
        journey = command.get("journey") or RULE_JOURNEY
        self.counts[(journey, str(command["channel"]))] += 1
        lead_id = str(command["lead_id"])
        latest = self._latest.get(lead_id)
        if latest is None:
            latest = self._latest[lead_id] = deque(maxlen=self.per_lead)
        self._latest.move_to_end(lead_id)
        latest.append({name: command.get(name) for name in COMMAND_SUMMARY_FIELDS})
        while len(self._latest) > self.max_leads:
            self._latest.popitem(last=False)

    def for_lead(self, lead_id: str) -> list[dict[str, Any]]:
        return list(self._latest.get(lead_id, ()))

    def to_json(self) -> list[dict[str, Any]]:
        """Return the counts, largest first, then by journey and channel."""
        ordered = sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))
        return [{"journey": journey, "channel": channel, "commands": count}
                for (journey, channel), count in ordered]


def check_lead_id(lead_id: str) -> str | None:
    """Return why ``lead_id`` cannot be a lead id, or None when it can.

    A lead id is non-blank printable text of at most MAX_ID_LENGTH characters,
    the length limit the event codec applies.
    """
    if not lead_id.strip():
        return "the lead id is empty"
    if len(lead_id) > MAX_ID_LENGTH:
        return f"the lead id is {len(lead_id)} characters long; the maximum is {MAX_ID_LENGTH}"
    for character in lead_id:
        # Category C: control, format, surrogate, private-use and unassigned code points.
        if unicodedata.category(character).startswith("C"):
            return (f"the lead id contains the non-printable character U+{ord(character):04X}; "
                    "lead ids are printable text")
    return None


def build_lead_timeline(row: dict[str, Any], known_commands: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Describe a lead row as lists of dated entries for the dashboard, without personal data.

    ``known_commands`` are summaries of the lead's commands that this worker
    published (CommandLog.for_lead). They add rule, action and reasons to the
    commands the row names, and reasons to the score changes that triggered them.
    """
    summaries = {command["command_id"]: command for command in known_commands}
    return {
        "lead_id": row["lead_id"],
        "stage": row.get("stage") or NO_STAGE,
        "score": row.get("score"),
        "model_version": row.get("model_version"),
        "events": [{"at": at, "kind": kind, "detail": detail} for at, kind, detail in row.get("recent", [])],
        "score_changes": _list_score_changes(row.get("score_history", []), summaries.values()),
        "commands": _merge_commands(row, summaries),
        "stage_history": [{"at": at, "stage": stage, "cause": cause}
                          for at, stage, cause in row.get("stage_history", [])],
        "deliveries": list(row.get("deliveries", [])),
        "journeys": [_summarize_journey(name, run) for name, run in sorted(row.get("journeys", {}).items())],
        "blocked": [{"channel": channel, **block} for channel, block in sorted(row.get("blocked", {}).items())],
        "consent": sorted(({"at": state["at"], "channel": channel, "purpose": purpose, "granted": state["granted"],
                            "source": state["source"], "text_version": state["text_version"]}
                           for channel, purposes in row.get("consent", {}).items()
                           for purpose, state in purposes.items()), key=lambda item: (item["at"], item["channel"])),
    }


def _list_score_changes(history: list[list[Any]], summaries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the score history with the change from the previous score and, where known, reasons.

    A command records the time of the event that triggered it, which is also the
    time of the score it was built with, so equal times join a score to its command.
    """
    reasons_at: dict[int, list[Any]] = {}
    for command in sorted(summaries, key=lambda item: item.get("created_at") or 0):
        if command.get("reasons"):
            reasons_at[command["event_time"]] = command["reasons"]
    changes = []
    previous = None
    for at, score, model_version in history:
        change: dict[str, Any] = {"at": at, "score": score, "model_version": model_version,
                                  "change": None if previous is None else round(score - previous, 3)}
        if at in reasons_at:
            change["reasons"] = reasons_at[at]
        changes.append(change)
        previous = score
    return changes


def _merge_commands(row: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge what the row keeps about its commands into one entry per command, oldest first.

    Sources: ``issued`` (published commands: time and channel), the journey runs'
    sends (status, opens, clicks, delivery), the outbox (deferred commands), the
    latest delivery outcome per command, and this worker's summaries.
    """
    latest_delivery = {delivery["command_id"]: delivery for delivery in row.get("deliveries", [])}
    known = dict(summaries)
    entries: dict[str, dict[str, Any]] = {}
    for command_id, (created_at, channel) in row.get("issued", {}).items():
        entries[command_id] = {"command_id": command_id, "at": created_at, "channel": channel, "status": "sent"}

    for journey, run in row.get("journeys", {}).items():
        for step, sent in run.get("sends", {}).items():
            # A dropped step has no command id; its key names the run and step instead.
            key = sent.get("command_id") or f"{journey}:{run.get('entry')}:{step}"
            entry = entries.setdefault(key, {"command_id": sent.get("command_id"), "at": sent.get("at")})
            entry.update(journey=journey, step=step, run=run.get("entry"), template=sent.get("template"),
                         status=sent.get("status"))
            for name in ("due", "reason", "opened", "clicked", "delivery", "bounce"):
                if sent.get(name) is not None:
                    entry[name] = sent[name]
            if entry.get("at") is None:
                entry["at"] = sent.get("due")

    for deferred in row.get("outbox", []):
        command = deferred["command"]
        entry = entries.setdefault(command["command_id"], {"command_id": command["command_id"]})
        entry.update(status="deferred", due=deferred["due"], reason=deferred["reason"],
                     at=entry.get("at") or deferred.get("since"))
        # The outbox keeps the whole command, so its rule and reasons are known without a summary.
        known[command["command_id"]] = {name: command.get(name) for name in COMMAND_SUMMARY_FIELDS}

    for command_id, entry in entries.items():
        summary = known.get(command_id)
        if summary is not None:
            for name in ("rule", "journey", "step", "action", "channel", "template", "score", "reasons"):
                if summary.get(name) is not None and entry.get(name) is None:
                    entry[name] = summary[name]
        delivery = latest_delivery.get(command_id)
        if delivery is not None and "delivery" not in entry:
            entry["delivery"] = delivery["status"]
    return sorted(entries.values(), key=lambda entry: entry.get("at") or 0)


def _summarize_journey(name: str, run: dict[str, Any]) -> dict[str, Any]:
    return {"journey": name, "run": run.get("entry"), "status": run.get("status"), "step": run.get("step"),
            "entered_at": run.get("entered_at"), "due": run.get("due"), "ended_at": run.get("ended_at"),
            "end_reason": run.get("end_reason")}
