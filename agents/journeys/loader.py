"""Loading a journey file: the send policy, lifecycle settings and journeys.

A journey file is TOML with ``[policy]``, ``[lifecycle]`` and ``[[journeys]]``
tables. ``config/journeys.toml`` documents the format. Loading checks every
value and raises ConfigError with the file, the line of the table, the journey
and step, the key and what is wrong, so a bad file stops the worker before it
consumes anything.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any

from nurture.agents.policy import CHANNEL_SENDS_LENGTH
from nurture.config.errors import ConfigError

from ._checks import Place, Table, is_number, parse_duration
from ._conditions import build_condition, build_exits
from ._steps import build_steps
from .spec import MESSAGE_CHANNELS, REENTRY, TRIGGERS, Cap, Journey, JourneyBook, Lifecycle, Policy, QuietHours

__all__ = ["load_journeys", "parse_duration"]

_TOP_KEYS = ("policy", "lifecycle", "journeys")
_POLICY_KEYS = ("time_zone", "quiet_hours", "max_delay", "caps")
_QUIET_HOURS_KEYS = ("start", "end", "channels")
_CAP_KEYS = ("max", "per")
_LIFECYCLE_KEYS = ("lead_on_form", "marketing_qualified_score", "customer_on_conversion")
_JOURNEY_KEYS = ("name", "trigger", "exit", "reentry", "reentry_after", "steps")
# A table header `[name]` or an array-of-tables header `[[name]]`, with optional quotes and spaces.
_HEADER = re.compile(r'^\s*(\[\[?)\s*([\w."\s-]+?)\s*\]\]?')


def load_journeys(path: str | Path) -> JourneyBook:
    """Read and check a journey file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read journey file: {exc}") from exc
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11 gives the position only inside the message: "... (at line 3, column 5)".
        line = re.search(r"at line (\d+)", str(exc))
        where = f"{path}:{line.group(1)}" if line else str(path)
        raise ConfigError(f"{where}: invalid TOML: {exc}") from exc

    headers = _Headers(text)
    root = Table(Place(path), document)
    for key in document:
        if key not in _TOP_KEYS:
            raise Place(path, headers.key_line(key)).error(
                f"unknown top-level key {key!r}; use {', '.join(_TOP_KEYS)}")

    return JourneyBook(
        policy=_policy(root, headers),
        lifecycle=_lifecycle(root, headers),
        journeys=_journeys(root, headers),
        source=str(path),
    )


class _Headers:
    """Line numbers of the table headers in the file's text.

    tomllib returns no positions, so the loader finds them by scanning the text.
    A table written inline or with dotted keys has no header of its own, so its
    errors give the line of the enclosing table, or no line at top level.
    """

    def __init__(self, text: str) -> None:
        self.tables: dict[str, int] = {}  # dotted name -> line of its first header
        self.journeys: list[int] = []
        self.steps: list[list[int]] = []  # per [[journeys]] header
        self.first_header: int | None = None
        self.lines = text.split("\n")  # as TOML counts lines; str.splitlines also splits at \u2028
        for number, line in enumerate(self.lines, start=1):
            match = _HEADER.match(line)
            if match is None:
                continue
            self.first_header = self.first_header or number
            name = re.sub(r'[\s"]', "", match.group(2))
            self.tables.setdefault(name, number)
            if match.group(1) == "[":
                continue
            if name == "journeys":
                self.journeys.append(number)
                self.steps.append([])
            elif name == "journeys.steps" and self.steps:
                self.steps[-1].append(number)

    def key_line(self, key: str) -> int | None:
        """Return the line that defines the top-level ``key``, as a header or before the first header."""
        for name, number in self.tables.items():
            if name == key or name.startswith(f"{key}."):
                return number
        assignment = re.compile(rf'^\s*"?{re.escape(key)}"?\s*[=.]')
        top_level_end = self.first_header - 1 if self.first_header else len(self.lines)
        for number, line in enumerate(self.lines[:top_level_end], start=1):
            if assignment.match(line):
                return number
        return None

    def journey_lines(self, count: int) -> list[int | None]:
        return list(self.journeys) if len(self.journeys) == count else [None] * count

    def step_lines(self, journey_index: int, count: int) -> list[int | None]:
        if len(self.journeys) > journey_index and len(self.steps[journey_index]) == count:
            return list(self.steps[journey_index])
        return [None] * count


def _policy(root: Table, headers: _Headers) -> Policy:
    policy = root.table("policy", required=False, line=headers.tables.get("policy"))
    if policy is None:
        return Policy()
    policy.check_keys(_POLICY_KEYS)
    quiet_hours = policy.table("quiet_hours", required=False, line=headers.tables.get("policy.quiet_hours"))
    caps = policy.table("caps", required=False, line=headers.tables.get("policy.caps"))
    return Policy(
        time_zone=_time_zone(policy),
        quiet_hours=_quiet_hours(quiet_hours) if quiet_hours is not None else None,
        caps=_caps(caps) if caps is not None else {},
        max_delay_ms=policy.duration("max_delay", default=Policy.max_delay_ms),
    )


def _time_zone(policy: Table) -> str:
    name = policy.text("time_zone", default=Policy.time_zone)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise policy.fail("time_zone", f"unknown time zone {name!r}; use an IANA name such as "
                                       "'Europe/Warsaw' or 'UTC'") from None
    return name


def _quiet_hours(quiet: Table) -> QuietHours:
    quiet.check_keys(_QUIET_HOURS_KEYS)
    start_hour, start_minute = quiet.clock("start")
    end_hour, end_minute = quiet.clock("end")
    if (start_hour, start_minute) == (end_hour, end_minute):
        raise quiet.fail("end", f"{quiet.raw['end']!r} equals 'start', which leaves no quiet time; "
                                "remove quiet_hours to send at any hour")
    return QuietHours(
        start_minute=start_hour * 60 + start_minute,
        end_minute=end_hour * 60 + end_minute,
        channels=quiet.names("channels", MESSAGE_CHANNELS, default=MESSAGE_CHANNELS),
    )


def _caps(caps: Table) -> dict[str, Cap]:
    result = {}
    for channel in caps.raw:
        if channel not in MESSAGE_CHANNELS:
            raise caps.fail(channel, f"{channel!r} is not a message channel; use {', '.join(MESSAGE_CHANNELS)}")
        cap = caps.table(channel)
        cap.check_keys(_CAP_KEYS)
        limit = cap.whole("max", minimum=1)
        if limit > CHANNEL_SENDS_LENGTH:
            raise cap.fail("max", f"{limit} is more than the {CHANNEL_SENDS_LENGTH} sends per channel that a lead's "
                                  f"state keeps, so the cap could not be enforced; use {CHANNEL_SENDS_LENGTH} or less")
        result[channel] = Cap(channel=channel, limit=limit, window_ms=cap.duration("per"))
    return result


def _lifecycle(root: Table, headers: _Headers) -> Lifecycle:
    lifecycle = root.table("lifecycle", required=False, line=headers.tables.get("lifecycle"))
    if lifecycle is None:
        return Lifecycle()
    lifecycle.check_keys(_LIFECYCLE_KEYS)
    return Lifecycle(
        lead_on_form=lifecycle.flag("lead_on_form", Lifecycle.lead_on_form),
        marketing_qualified_score=_qualified_score(lifecycle),
        customer_on_conversion=lifecycle.flag("customer_on_conversion", Lifecycle.customer_on_conversion),
    )


def _qualified_score(lifecycle: Table) -> float | None:
    """Read the score that makes a lead marketing qualified. The value false turns this off and returns None."""
    key = "marketing_qualified_score"
    if not lifecycle.has(key):
        return Lifecycle.marketing_qualified_score
    score = lifecycle.raw[key]
    if score is False:
        return None
    if not is_number(score) or not 0 < score <= 100:
        raise lifecycle.fail(key, f"expected a score in (0, 100], or false to turn it off, got {score!r}")
    return float(score)


def _journeys(root: Table, headers: _Headers) -> tuple[Journey, ...]:
    if not root.has("journeys"):
        return ()
    raw = root.raw["journeys"]
    if not isinstance(raw, list) or not raw:
        raise Place(root.place.path, headers.key_line("journeys")).error(
            f"key 'journeys': expected [[journeys]] tables, got {raw!r}; leave the key out to declare no journeys")

    journeys: list[Journey] = []
    # Journeys written inline, without [[journeys]] headers, report errors at the `journeys =` line.
    inline_line = headers.key_line("journeys")
    for index, (item, line) in enumerate(zip(raw, headers.journey_lines(len(raw)))):
        place = Place(root.place.path, line or inline_line, f"journey {index + 1}")
        journey = _journey(place, item, headers, index, line)
        for earlier_index, earlier in enumerate(journeys):
            if earlier.name == journey.name:
                raise place.named(journey.name).error(
                    f"duplicate journey name; journey {earlier_index + 1} already uses it")
        journeys.append(journey)
    return tuple(journeys)


def _journey(place: Place, raw: Any, headers: _Headers, index: int, line: int | None) -> Journey:
    """Build the journey at ``index``; ``line`` is its header's line, or None if it has none."""
    if not isinstance(raw, dict):
        raise place.error(f"expected a [[journeys]] table, got {raw!r}")
    name = Table(place, raw).text("name")
    place = place.named(name)
    journey = Table(place, raw)
    journey.check_keys(_JOURNEY_KEYS)

    reentry = journey.choice("reentry", REENTRY, default="never")
    if journey.has("reentry_after") and reentry != "after_exit":
        raise journey.fail("reentry_after", "applies only with reentry = 'after_exit'")
    raw_steps = journey.value("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise journey.fail("steps", f"expected one or more [[journeys.steps]] tables, got {raw_steps!r}")

    return Journey(
        name=name,
        trigger=build_condition(journey.table("trigger"), TRIGGERS),
        steps=build_steps(place, raw_steps, headers.step_lines(index, len(raw_steps))),
        exits=build_exits(journey),
        reentry=reentry,
        reentry_after_ms=journey.duration("reentry_after", default=0, minimum=0),
        line=line,
    )
