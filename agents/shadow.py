"""Counting how a shadow model's decisions differ from the live model's."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

Send = tuple[str, "str | None"]


class ShadowStats:
    """Running totals of live and shadow decisions, per rule."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events = 0
        self.both: Counter[str] = Counter()
        self.live_only: Counter[str] = Counter()
        self.shadow_only: Counter[str] = Counter()

    def add(self, live: list[Send], shadow: list[Send]) -> None:
        """Count one event's decisions; a send is (rule, template)."""
        live_set, shadow_set = set(live), set(shadow)
        with self._lock:
            self.events += 1
            for rule, _ in live_set & shadow_set:
                self.both[rule] += 1
            for rule, _ in live_set - shadow_set:
                self.live_only[rule] += 1
            for rule, _ in shadow_set - live_set:
                self.shadow_only[rule] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            rules = sorted(set(self.both) | set(self.live_only) | set(self.shadow_only))
            return {
                "events": self.events,
                "agree": sum(self.both.values()),
                "live_only": sum(self.live_only.values()),
                "shadow_only": sum(self.shadow_only.values()),
                "by_rule": {rule: {"agree": self.both[rule], "live_only": self.live_only[rule],
                                   "shadow_only": self.shadow_only[rule]} for rule in rules},
            }
