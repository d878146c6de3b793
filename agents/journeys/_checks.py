"""Typed reading of journey-file values, with errors that name the file, line and key.

Private to ``loader.py``. A :class:`Table` wraps one TOML table, and each of its
readers returns a checked value or raises ConfigError in the rule-file style:
``path:line: journey 2 ('name'): step 3 ('id'): key 'send.channel': what is wrong``.
The line is the one where the offending key is written, found by :class:`Layout`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nurture.config.errors import ConfigError

from ._layout import KeyPath, Layout
from .spec import MINUTE_MS

# Milliseconds per duration unit. Seconds are left out on purpose, because no
# journey timer is meant to be finer than a minute.
DURATION_UNITS = {"m": MINUTE_MS, "h": 60 * MINUTE_MS, "d": 24 * 60 * MINUTE_MS, "w": 7 * 24 * 60 * MINUTE_MS}
_DURATION = re.compile(r"(\d+)([mhdw])")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


# Default value of a reader argument that makes the key mandatory.
REQUIRED: Any = _Required()


def parse_duration(text: str) -> int:
    """Convert a duration such as ``"36h"`` to milliseconds.

    The text is a whole number followed by m (minutes), h (hours), d (days) or
    w (weeks). Raises ValueError for anything else, including "90s" and "1.5h".
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}; write a whole number followed by m, h, d or w "
            "(minutes, hours, days or weeks), such as '36h'"
        )
    return int(match.group(1)) * DURATION_UNITS[match.group(2)]


def format_duration(milliseconds: int) -> str:
    """Write ``milliseconds`` in the largest unit that divides it, as a journey file would."""
    for unit, size in reversed(DURATION_UNITS.items()):
        if milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def parse_clock(text: str) -> tuple[int, int]:
    """Convert a 24-hour ``"HH:MM"`` time to (hour, minute). Raises ValueError if it is invalid."""
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"invalid time {text!r}; write a 24-hour time such as '08:00' or '21:30'")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Place:
    """A table in the file: its key path, which locates lines, and a label such as ``journey 2 ('x')``."""

    path: Path
    layout: Layout
    key_path: KeyPath = ()
    label: str = ""

    def error(self, message: str, at: KeyPath = ()) -> ConfigError:
        """Build the error about this table, or about its key at ``at``, with the line where that is written."""
        line = self.layout.line(self.key_path + at)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(f"{where}: {self.label}: {message}" if self.label else f"{where}: {message}")

    def named(self, name: str) -> Place:
        """Return this place with the name of its journey or step added to the label."""
        return replace(self, label=f"{self.label} ({name!r})")

    def within(self, label: str, key_path: KeyPath) -> Place:
        """Return the place of a part of this table, such as a step of a journey, at ``key_path`` below it."""
        joined = f"{self.label}: {label}" if self.label else label
        return Place(self.path, self.layout, self.key_path + key_path, joined)

    def header_line(self) -> int | None:
        """Return the line of this table's own header, or None if it has none, as for an inline table."""
        return self.layout.header_line(self.key_path)


class Table:
    """One TOML table under check. ``prefix`` turns a key into its dotted name in messages."""

    def __init__(self, place: Place, raw: dict[str, Any], prefix: str = "") -> None:
        self.place = place
        self.raw = raw
        self.prefix = prefix

    def fail(self, key: str, message: str) -> ConfigError:
        """Build the error about ``key``, a key of this table or a dotted path into one, such as "branch.step"."""
        at = (key,) if key in self.raw else tuple(key.split("."))
        return self.place.error(f"key {self.prefix + key!r}: {message}", at)

    def has(self, key: str) -> bool:
        return key in self.raw

    def check_keys(self, allowed: Sequence[str], context: str = "") -> None:
        """Reject the first key not in ``allowed``, such as a misspelt one."""
        for key in self.raw:
            if key not in allowed:
                scope = f" for {context}" if context else ""
                raise self.fail(key, f"unknown key{scope}; use {', '.join(allowed)}")

    def value(self, key: str) -> Any:
        if key not in self.raw:
            raise self.place.error(f"key {self.prefix + key!r} is missing")
        return self.raw[key]

    def defaults(self, key: str, default: Any) -> bool:
        """Tell whether a reader should return ``default`` because an optional key is absent."""
        return key not in self.raw and default is not REQUIRED

    def table(self, key: str, required: bool = True) -> Table | None:
        """Return the sub-table ``key`` for reading, or None if it is absent and optional."""
        if key not in self.raw and not required:
            return None
        raw = self.value(key)
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a table such as {{ key = value }}, got {raw!r}")
        place = replace(self.place, key_path=self.place.key_path + (key,))
        return Table(place, raw, f"{self.prefix}{key}.")

    def text(self, key: str, default: Any = REQUIRED) -> Any:
        if self.defaults(key, default):
            return default
        value = self.value(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"expected non-empty text, got {value!r}")
        return value

    def choice(self, key: str, options: Sequence[str], default: Any = REQUIRED) -> Any:
        if self.defaults(key, default):
            return default
        value = self.value(key)
        if value not in options:
            raise self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        if self.defaults(key, default):
            return default
        value = self.value(key)
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def score(self, key: str) -> float:
        value = self.value(key)
        if not is_number(value) or not 0 < value <= 100:
            raise self.fail(key, f"expected a score in (0, 100], got {value!r}")
        return float(value)

    def whole(self, key: str, minimum: int) -> int:
        value = self.value(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(key, f"expected a whole number of at least {minimum}, got {value!r}")
        return value

    def duration(self, key: str, default: Any = REQUIRED, minimum: int = MINUTE_MS,
                 maximum: int | None = None) -> int:
        """Read a duration such as ``"2d"`` as milliseconds. ``default`` is in milliseconds."""
        if self.defaults(key, default):
            return default
        text = self.value(key)
        if not isinstance(text, str):
            raise self.fail(key, f"expected a duration such as '2d', got {text!r}")
        try:
            milliseconds = parse_duration(text)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None
        if milliseconds < minimum or (maximum is not None and milliseconds > maximum):
            limit = f"from {format_duration(minimum)} to {format_duration(maximum)}" if maximum is not None \
                else f"of at least {format_duration(minimum)}"
            raise self.fail(key, f"{text!r} is out of range; use a duration {limit}")
        return milliseconds

    def clock(self, key: str) -> tuple[int, int]:
        text = self.value(key)
        try:
            return parse_clock(text)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def names(self, key: str, options: Sequence[str], default: Any = REQUIRED) -> tuple[str, ...]:
        """Read a non-empty list of distinct names, each one of ``options``."""
        if self.defaults(key, default):
            return default
        value = self.value(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"expected a list of one or more of {', '.join(options)}, got {value!r}")
        for index, item in enumerate(value):
            if item not in options:
                raise self.fail(key, f"{item!r} is not one of {', '.join(options)}")
            if item in value[:index]:
                raise self.fail(key, f"lists {item!r} twice")
        return tuple(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
