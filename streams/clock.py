"""The worker's clock: the system clock, or a file that tests and drills move forward."""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

log = structlog.get_logger("nurture.clock")


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class FileClock:
    """Reads the time, in epoch milliseconds, from a file whenever it changes.

    A missing or unreadable file keeps the last time read (the system clock before
    the first read), so a test can create the file after the worker starts.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._now = SystemClock().now_ms()
        self._failing = False

    def now_ms(self) -> int:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._now = int(self.path.read_text(encoding="utf-8").strip())
                self._stamp = stamp
            self._failing = False
        except (OSError, ValueError) as exc:
            if not self._failing:  # once per run of failures, not on every read
                log.warning("clock_file_unreadable", path=str(self.path), error=repr(exc))
            self._failing = True
        return self._now


def make_clock(clock_file: str) -> SystemClock | FileClock:
    return FileClock(clock_file) if clock_file else SystemClock()
