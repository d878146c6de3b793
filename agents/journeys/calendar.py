"""Local wall-clock time for journeys: lead time zones, next local times and quiet hours.

All instants are epoch milliseconds in UTC. Wall times that daylight saving time
skips or repeats resolve as ``zoneinfo`` does with ``fold=0`` (checked on Python 3.11).
A time in a spring gap uses the offset from before the gap. So 02:30 on the day
Europe/Warsaw moves from 02:00 to 03:00 is 03:30 CEST. A time repeated in autumn
is its first occurrence.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nurture.agents.journeys.spec import QuietHours

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)


@lru_cache(maxsize=512)
def _load_zone(name: str) -> ZoneInfo | None:
    """Load an IANA zone, or return None if the name is invalid or not found.

    The cache also stores misses, so an invalid name shared by many profiles is looked up once.
    """
    try:
        return ZoneInfo(name)
    # ValueError: malformed key or a file that is not TZif (e.g. "zone.tab").
    # OSError: a directory key such as "Europe".
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def lead_zone(profile_zone: str | None, default_zone: str) -> ZoneInfo:
    """Resolve the lead's zone, or ``default_zone`` if the profile's name is missing or invalid.

    Callers that want to log a fallback can compare the result's ``key`` with
    ``profile_zone``. An invalid ``default_zone`` is a configuration error, so it
    raises the ``ZoneInfo`` error (``ZoneInfoNotFoundError``, ``ValueError`` or ``OSError``).
    """
    if isinstance(profile_zone, str) and profile_zone:
        zone = _load_zone(profile_zone)
        if zone is not None:
            return zone
    return ZoneInfo(default_zone)


def _to_local(at_ms: int, zone: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(zone)


def _wall_time_ms(day: date, hour: int, minute: int, zone: ZoneInfo) -> int:
    """Convert a local date and time to epoch milliseconds, resolving DST with fold=0."""
    local = datetime.combine(day, time(hour, minute), tzinfo=zone)
    # Subtracting across different tzinfo objects goes through UTC offsets,
    # so the result is elapsed time, not wall-clock difference.
    return (local - _EPOCH) // _ONE_MS


def next_local_time(
    at_ms: int, zone: ZoneInfo, hour: int, minute: int = 0, weekday: int | None = None
) -> int:
    """Find the first instant after ``at_ms`` at which the clock in ``zone`` reads hour:minute.

    ``weekday`` (0 is Monday) limits the result to that day of the week. Each
    local date has exactly one such instant: a time skipped by DST maps to the
    same distance past the gap, and a repeated time to its first occurrence only.
    The result is always greater than ``at_ms``.
    Raises ``ValueError`` for an hour, minute or weekday out of range.
    """
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be in 0..23, got {hour}")
    if not 0 <= minute <= 59:
        raise ValueError(f"minute must be in 0..59, got {minute}")
    if weekday is not None and not 0 <= weekday <= 6:
        raise ValueError(f"weekday must be in 0..6 (0 is Monday), got {weekday}")

    today = _to_local(at_ms, zone).date()
    # Start a day early because a gap across midnight can move the previous
    # date's wall time past at_ms. Seven days later is the same weekday again,
    # so the loop always finds a match.
    for offset in range(-1, 8):
        day = today + timedelta(days=offset)
        if weekday is not None and day.weekday() != weekday:
            continue
        candidate_ms = _wall_time_ms(day, hour, minute, zone)
        if candidate_ms > at_ms:
            return candidate_ms
    raise RuntimeError(f"no {hour:02d}:{minute:02d} found in the 8 days after {at_ms} in {zone}")


def _in_window(minute_of_day: int, quiet: QuietHours) -> bool:
    start, end = quiet.start_minute, quiet.end_minute
    if start <= end:
        # start == end is an empty window.
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


def quiet_hours_end(at_ms: int, zone: ZoneInfo, quiet: QuietHours) -> int | None:
    """Find when the quiet hours around ``at_ms`` end, or return None outside quiet hours.

    The window includes its start and excludes its end, both in local time.
    """
    local = _to_local(at_ms, zone)
    if not _in_window(local.hour * 60 + local.minute, quiet):
        return None
    # NOTE: an end time inside a spring gap (e.g. 02:30 in Warsaw on the change
    # day) resolves to 03:30 local, although the clock leaves the window at 03:00.
    return next_local_time(at_ms, zone, quiet.end_minute // 60, quiet.end_minute % 60)


def local_text(at_ms: int, zone: ZoneInfo) -> str:
    """Format an instant for display, e.g. "2025-03-31 10:00 CEST (Europe/Warsaw)"."""
    local = _to_local(at_ms, zone)
    return f"{local:%Y-%m-%d %H:%M %Z} ({zone})"
