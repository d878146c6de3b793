import io
import struct
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from nurture.agents.journeys.calendar import lead_zone, local_text, next_local_time, quiet_hours_end
from nurture.agents.journeys.spec import QuietHours

UTC = ZoneInfo("UTC")
WARSAW = ZoneInfo("Europe/Warsaw")
HOUR_MS = 3_600_000
NIGHT = QuietHours(start_minute=21 * 60, end_minute=8 * 60)
MIDDAY = QuietHours(start_minute=12 * 60, end_minute=14 * 60)


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch milliseconds of a literal UTC time, built without the code under test."""
    return int(datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()) * 1000


# 2025-01-06 is a Monday.


def test_next_time_later_same_day() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 8), UTC, 10) == utc_ms(2025, 1, 6, 10)


def test_next_time_passed_is_tomorrow() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 11), UTC, 10) == utc_ms(2025, 1, 7, 10)


def test_next_time_excludes_now() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 10), UTC, 10) == utc_ms(2025, 1, 7, 10)


def test_next_time_with_minute() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 10, 15), UTC, 10, 30) == utc_ms(2025, 1, 6, 10, 30)


def test_next_time_half_hour_zone() -> None:
    # Asia/Kolkata is UTC+05:30 with no DST.
    kolkata = ZoneInfo("Asia/Kolkata")

    assert next_local_time(utc_ms(2025, 1, 6, 0), kolkata, 10) == utc_ms(2025, 1, 6, 4, 30)


def test_weekday_later_this_week() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 8), UTC, 10, weekday=3) == utc_ms(2025, 1, 9, 10)


def test_weekday_today_not_passed() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 8), UTC, 10, weekday=0) == utc_ms(2025, 1, 6, 10)


def test_weekday_today_passed_is_next_week() -> None:
    assert next_local_time(utc_ms(2025, 1, 6, 11), UTC, 10, weekday=0) == utc_ms(2025, 1, 13, 10)


def test_weekday_earlier_in_week() -> None:
    # Thursday to the following Monday.
    assert next_local_time(utc_ms(2025, 1, 9, 11), UTC, 10, weekday=0) == utc_ms(2025, 1, 13, 10)


@pytest.mark.parametrize(
    ("hour", "minute", "weekday", "message"),
    [
        (24, 0, None, "hour must be in 0..23, got 24"),
        (-1, 0, None, "hour must be in 0..23, got -1"),
        (10, 60, None, "minute must be in 0..59, got 60"),
        (10, 0, 7, r"weekday must be in 0..6 \(0 is Monday\), got 7"),
    ],
)
def test_next_time_rejects_out_of_range(hour: int, minute: int, weekday: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        next_local_time(utc_ms(2025, 1, 6), UTC, hour, minute, weekday)


# Europe/Warsaw spring change: 2025-03-30 02:00 CET (+01:00) jumps to 03:00 CEST (+02:00).
SATURDAY_SPRING_10 = utc_ms(2025, 3, 29, 9)  # 10:00 CET


def test_spring_next_day_is_23_hours() -> None:
    result = next_local_time(SATURDAY_SPRING_10, WARSAW, 10)

    assert result == utc_ms(2025, 3, 30, 8)
    assert result - SATURDAY_SPRING_10 == 23 * HOUR_MS


def test_spring_weekday_across_change() -> None:
    assert next_local_time(SATURDAY_SPRING_10, WARSAW, 10, weekday=0) == utc_ms(2025, 3, 31, 8)


def test_spring_gap_time_moves_past_gap() -> None:
    # 02:30 does not exist that day. With the CET offset it is 01:30 UTC, which is 03:30 CEST.
    result = next_local_time(SATURDAY_SPRING_10, WARSAW, 2, 30)

    assert result == utc_ms(2025, 3, 30, 1, 30)
    assert local_text(result, WARSAW) == "2025-03-30 03:30 CEST (Europe/Warsaw)"


def test_spring_gap_time_after_jump() -> None:
    # At 03:10 CEST the mapped 02:30 (03:30 CEST) is still ahead.
    assert next_local_time(utc_ms(2025, 3, 30, 1, 10), WARSAW, 2, 30) == utc_ms(2025, 3, 30, 1, 30)


def test_spring_gap_time_passed() -> None:
    # At 03:40 CEST the next 02:30 is on Monday, in CEST.
    assert next_local_time(utc_ms(2025, 3, 30, 1, 40), WARSAW, 2, 30) == utc_ms(2025, 3, 31, 0, 30)


# Europe/Warsaw autumn change: 2025-10-26 03:00 CEST (+02:00) falls back to 02:00 CET (+01:00).
SATURDAY_AUTUMN_10 = utc_ms(2025, 10, 25, 8)  # 10:00 CEST


def test_autumn_next_day_is_25_hours() -> None:
    result = next_local_time(SATURDAY_AUTUMN_10, WARSAW, 10)

    assert result == utc_ms(2025, 10, 26, 9)
    assert result - SATURDAY_AUTUMN_10 == 25 * HOUR_MS


def test_autumn_repeated_time_first() -> None:
    # 02:30 occurs at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
    result = next_local_time(SATURDAY_AUTUMN_10, WARSAW, 2, 30)

    assert result == utc_ms(2025, 10, 26, 0, 30)
    assert local_text(result, WARSAW) == "2025-10-26 02:30 CEST (Europe/Warsaw)"


def test_autumn_second_occurrence_skipped() -> None:
    # At 02:00 CET, between the two 02:30s, the day's 02:30 has passed, so the
    # result is Monday 02:30 CET rather than the second occurrence an hour later.
    assert next_local_time(utc_ms(2025, 10, 26, 1), WARSAW, 2, 30) == utc_ms(2025, 10, 27, 1, 30)


def posix_zone(rule: str, key: str) -> ZoneInfo:
    """Build a zone from a POSIX TZ rule, as a TZif version 2 file with no transitions."""
    designations = b"XST\0"
    header = b"TZif2" + b"\0" * 15 + struct.pack(">6l", 0, 0, 0, 0, 1, len(designations))
    # One local time type: UTC offset in seconds, is-DST flag, designation index.
    body = struct.pack(">lBB", 3600, 0, 0) + designations
    data = header + body + header + body + b"\n" + rule.encode() + b"\n"
    return ZoneInfo.from_file(io.BytesIO(data), key=key)


def test_gap_across_midnight_uses_previous_date() -> None:
    # Clocks jump from Sunday 23:30 (+01:00) to Monday 00:30 (+02:00), so Sunday
    # 23:45 maps to Monday 00:45, which is still ahead at Monday 00:35.
    zone = posix_zone("XST-1XDT,M3.5.0/23:30,M10.5.0/3", "Test/LateGap")
    monday_0035 = utc_ms(2025, 3, 30, 22, 35)

    result = next_local_time(monday_0035, zone, 23, 45)

    assert result == utc_ms(2025, 3, 30, 22, 45)
    assert local_text(result, zone) == "2025-03-31 00:45 XDT (Test/LateGap)"


def test_quiet_night_before_spring_change() -> None:
    # Friday 23:00 CET ends at Saturday 08:00 CET.
    assert quiet_hours_end(utc_ms(2025, 3, 28, 22), WARSAW, NIGHT) == utc_ms(2025, 3, 29, 7)


def test_quiet_night_over_spring_change() -> None:
    # Saturday 23:00 CET ends at Sunday 08:00 CEST.
    assert quiet_hours_end(utc_ms(2025, 3, 29, 22), WARSAW, NIGHT) == utc_ms(2025, 3, 30, 6)


def test_quiet_after_midnight_spring_change() -> None:
    # Sunday 01:30 CET, before the jump, ends at Sunday 08:00 CEST.
    assert quiet_hours_end(utc_ms(2025, 3, 30, 0, 30), WARSAW, NIGHT) == utc_ms(2025, 3, 30, 6)


def test_quiet_night_before_autumn_change() -> None:
    # Friday 23:00 CEST ends at Saturday 08:00 CEST.
    assert quiet_hours_end(utc_ms(2025, 10, 24, 21), WARSAW, NIGHT) == utc_ms(2025, 10, 25, 6)


def test_quiet_night_over_autumn_change() -> None:
    # Saturday 23:00 CEST ends at Sunday 08:00 CET.
    assert quiet_hours_end(utc_ms(2025, 10, 25, 21), WARSAW, NIGHT) == utc_ms(2025, 10, 26, 7)


def test_quiet_in_repeated_hour() -> None:
    # Sunday 02:30 CET, the second pass through that hour, ends at 08:00 CET.
    assert quiet_hours_end(utc_ms(2025, 10, 26, 1, 30), WARSAW, NIGHT) == utc_ms(2025, 10, 26, 7)


def test_quiet_night_at_noon() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 12), UTC, NIGHT) is None


def test_quiet_night_at_start() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 21), UTC, NIGHT) == utc_ms(2025, 1, 7, 8)


def test_quiet_night_at_end() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 7, 8), UTC, NIGHT) is None


def test_quiet_night_last_millisecond() -> None:
    end = utc_ms(2025, 1, 7, 8)

    assert quiet_hours_end(end - 1, UTC, NIGHT) == end


def test_quiet_midday_inside() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 13), UTC, MIDDAY) == utc_ms(2025, 1, 6, 14)


def test_quiet_midday_at_start() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 12), UTC, MIDDAY) == utc_ms(2025, 1, 6, 14)


def test_quiet_midday_at_end() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 14), UTC, MIDDAY) is None


def test_quiet_midday_before_start() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 11, 59), UTC, MIDDAY) is None


def test_quiet_midday_in_evening() -> None:
    assert quiet_hours_end(utc_ms(2025, 1, 6, 22), UTC, MIDDAY) is None


def test_quiet_empty_window() -> None:
    empty = QuietHours(start_minute=9 * 60, end_minute=9 * 60)

    assert quiet_hours_end(utc_ms(2025, 1, 6, 9), UTC, empty) is None


def test_local_text_summer() -> None:
    assert local_text(utc_ms(2025, 3, 31, 8), WARSAW) == "2025-03-31 10:00 CEST (Europe/Warsaw)"


def test_local_text_utc() -> None:
    assert local_text(utc_ms(2025, 1, 6, 10), UTC) == "2025-01-06 10:00 UTC (UTC)"


def test_lead_zone_from_profile() -> None:
    assert lead_zone("Europe/Warsaw", "UTC").key == "Europe/Warsaw"


@pytest.mark.parametrize("profile_zone", [None, "", "Mars/Olympus", "Europe", "../etc/passwd", "zone.tab", 5])
def test_lead_zone_fallback(profile_zone: object) -> None:
    assert lead_zone(profile_zone, "America/New_York").key == "America/New_York"  # type: ignore[arg-type]


def test_lead_zone_invalid_default() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        lead_zone(None, "Mars/Olympus")
