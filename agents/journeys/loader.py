"""Loading a journey file: the send policy, lifecycle settings and journeys.

A journey file is TOML with ``[policy]``, ``[lifecycle]`` and ``[[journeys]]``
tables. ``config/journeys.toml`` documents the format. Loading checks every
value, so a bad file stops the worker before it consumes anything. The
ConfigError names the file, the line of the offending key (or of its table when
the key is missing), the journey and step, the key and what is wrong.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any

import structlog

from nurture.agents.policy import CHANNEL_SENDS_LENGTH
from nurture.config.errors import ConfigError

from ._checks import Layout, Place, Table, is_number, parse_duration
from ._conditions import build_condition, build_exits
from ._steps import build_steps
from .spec import MESSAGE_CHANNELS, REENTRY, TRIGGERS, Cap, Journey, JourneyBook, Lifecycle, Policy, QuietHours

__all__ = ["load_journeys", "parse_duration"]

_TOP_KEYS = ("policy", "lifecycle", "journeys")
_POLICY_KEYS = ("time_zone", "quiet_hours", "max_delay", "stale_after", "caps")
_QUIET_HOURS_KEYS = ("start", "end", "channels")
_CAP_KEYS = ("max", "per")
_LIFECYCLE_KEYS = ("lead_on_form", "marketing_qualified_score", "customer_on_conversion")
_JOURNEY_KEYS = ("name", "trigger", "exit", "reentry", "reentry_after", "steps")

log = structlog.get_logger("nurture.journeys")


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

    layout = Layout(text)
    if layout.unread_line is not None:
        # tomllib accepted the text, so this is a gap in Layout's scanner. Errors
        # about keys from this line on name an earlier header line, or no line.
        log.warning("journey_file_layout_incomplete", path=str(path), line=layout.unread_line)
    root = Table(Place(path, layout), document)
    for key in document:
        if key not in _TOP_KEYS:
            raise root.place.error(f"unknown top-level key {key!r}; use {', '.join(_TOP_KEYS)}", (key,))

    return JourneyBook(
        policy=_policy(root),
        lifecycle=_lifecycle(root),
        journeys=_journeys(root),
        source=str(path),
    )


def _policy(root: Table) -> Policy:
    policy = root.table("policy", required=False)
    if policy is None:
        return Policy()
    policy.check_keys(_POLICY_KEYS)
    quiet_hours = policy.table("quiet_hours", required=False)
    caps = policy.table("caps", required=False)
    return Policy(
        time_zone=_time_zone(policy),
        quiet_hours=_quiet_hours(quiet_hours) if quiet_hours is not None else None,
        caps=_caps(caps) if caps is not None else {},
        max_delay_ms=policy.duration("max_delay", default=Policy.max_delay_ms),
        stale_after_ms=policy.duration("stale_after", default=Policy.stale_after_ms),
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


def _lifecycle(root: Table) -> Lifecycle:
    lifecycle = root.table("lifecycle", required=False)
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


def _journeys(root: Table) -> tuple[Journey, ...]:
    if not root.has("journeys"):
        return ()
    raw = root.raw["journeys"]
    if not isinstance(raw, list) or not raw:
        raise root.fail("journeys", f"expected [[journeys]] tables, got {raw!r}; "
                                    "leave the key out to declare no journeys")

    journeys: list[Journey] = []
    for index, item in enumerate(raw):
        place = root.place.within(f"journey {index + 1}", ("journeys", index))
        journey = _journey(place, item)
        for earlier_index, earlier in enumerate(journeys):
            if earlier.name == journey.name:
                raise place.named(journey.name).error(
                    f"duplicate journey name; journey {earlier_index + 1} already uses it", ("name",))
        journeys.append(journey)
    return tuple(journeys)


def _journey(place: Place, raw: Any) -> Journey:
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
        steps=build_steps(place, raw_steps),
        exits=build_exits(journey),
        reentry=reentry,
        reentry_after_ms=journey.duration("reentry_after", default=0, minimum=0),
        line=place.header_line(),  # None for a journey written inline
    )
