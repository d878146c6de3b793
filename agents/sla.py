"""Delivery service levels per channel, from the outcomes delivery workers report.

For each channel the tracker keeps the outcomes of a sliding time window: how
long commands took to be sent and to be delivered (from the command's
``created_at`` to the outcome's time), and how many bounced or failed. A check
compares the window's 95th percentiles and rates with the objectives and
reports each objective that changed between met and breached, so the caller
logs a breach once and its end once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = ("sent_p95_seconds", "delivered_p95_seconds", "bounce_rate", "failure_rate")


@dataclass(frozen=True)
class Objectives:
    """Targets a channel must meet over ``window_seconds``; checked once ``min_outcomes`` are in."""

    sent_p95_seconds: float = 300.0
    delivered_p95_seconds: float = 900.0
    bounce_rate: float = 0.05
    failure_rate: float = 0.02
    window_seconds: float = 3600.0
    min_outcomes: int = 20


@dataclass(frozen=True)
class Change:
    """An objective of a channel that became breached (or met again) at the last check."""

    channel: str
    objective: str
    breached: bool
    value: float
    target: float


@dataclass
class _Window:
    # (time_ms, status, latency_ms or None, command_id), oldest first
    outcomes: deque = field(default_factory=deque)
    breached: set[str] = field(default_factory=set)


class SlaTracker:
    def __init__(self, objectives: Objectives) -> None:
        self.objectives = objectives
        self._channels: dict[str, _Window] = {}

    def observe(self, channel: str, status: str, at_ms: int, latency_ms: int | None,
                command_id: str = "") -> None:
        """Record one outcome; ``latency_ms`` is None when the command's creation time is unknown."""
        self._channels.setdefault(channel, _Window()).outcomes.append((at_ms, status, latency_ms, command_id))

    def summary(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """Return per channel the window's counts, rates and latency percentiles (seconds)."""
        result = {}
        for channel, window in sorted(self._channels.items()):
            self._trim(window, now_ms)
            result[channel] = self._figures(window)
        return result

    def check(self, now_ms: int) -> list[Change]:
        """Compare each channel's window with the objectives; return what changed since the last check."""
        changes = []
        for channel, figures in self.summary(now_ms).items():
            window = self._channels[channel]
            for objective in OBJECTIVES:
                value = figures.get(objective)
                target = getattr(self.objectives, objective)
                enough = figures["outcomes"] >= self.objectives.min_outcomes
                breached = enough and value is not None and value > target
                if breached != (objective in window.breached):
                    (window.breached.add if breached else window.breached.discard)(objective)
                    changes.append(Change(channel, objective, breached, value if value is not None else 0.0, target))
        return changes

    def breached(self) -> dict[str, set[str]]:
        return {channel: set(window.breached) for channel, window in self._channels.items()}

    def _trim(self, window: _Window, now_ms: int) -> None:
        oldest = now_ms - self.objectives.window_seconds * 1000
        while window.outcomes and window.outcomes[0][0] < oldest:
            window.outcomes.popleft()

    @staticmethod
    def _figures(window: _Window) -> dict[str, Any]:
        outcomes = list(window.outcomes)
        sent = sorted(latency / 1000 for _, status, latency, _ in outcomes if status == "sent" and latency is not None)
        delivered = sorted(latency / 1000 for _, status, latency, _ in outcomes
                           if status == "delivered" and latency is not None)
        # A command can be reported several times (sent, then delivered or bounced), so
        # the rates count commands: those with an outcome, and those that bounced or failed.
        commands = {(command_id or index) for index, (_, _, _, command_id) in enumerate(outcomes)}
        bounced = {(command_id or index) for index, (_, status, _, command_id) in enumerate(outcomes)
                   if status == "bounced"}
        failed = {(command_id or index) for index, (_, status, _, command_id) in enumerate(outcomes)
                  if status == "failed"}
        return {
            "outcomes": len(outcomes),
            "commands": len(commands),
            "sent_p50_seconds": _percentile(sent, 50), "sent_p95_seconds": _percentile(sent, 95),
            "delivered_p50_seconds": _percentile(delivered, 50),
            "delivered_p95_seconds": _percentile(delivered, 95),
            "bounce_rate": len(bounced) / len(commands) if commands else None,
            "failure_rate": len(failed) / len(commands) if commands else None,
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    """Return the nearest-rank percentile of sorted values, or None for none."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
