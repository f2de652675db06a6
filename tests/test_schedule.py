"""Unit tests of goaltrack.scheduling.occurrences: wall-clock schedules across DST, month ends, zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from unittest.mock import patch
from zoneinfo import ZoneInfo

import pytest

from goaltrack.scheduling import occurrences as schedule
from goaltrack.scheduling.occurrences import local_instant, next_digest, next_reminder

BERLIN = ZoneInfo("Europe/Berlin")


def next_reminder_at(**arguments: Any) -> datetime | None:
    """The instant of the next reminder occurrence (None past the deadline)."""
    occurrence = next_reminder(**arguments)
    return occurrence.at if occurrence else None


def next_digest_at(**arguments: Any) -> datetime | None:
    """The instant of the next digest (None when digests are off)."""
    occurrence = next_digest(**arguments)
    return occurrence.at if occurrence else None


NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def daily(
    remind_time: time, after: datetime, zone: ZoneInfo = BERLIN, anchor: date = date(2026, 1, 1)
) -> datetime | None:
    return next_reminder_at(
        anchor=anchor, remind_time=remind_time, frequency_days=1, zone=zone, after=after
    )


def chain(remind_time: time, after: datetime, count: int, zone: ZoneInfo) -> list[datetime]:
    """`count` successive daily firings, each computed from the previous one."""
    fired: list[datetime] = []
    for _ in range(count):
        nxt = daily(remind_time, after, zone)
        assert nxt is not None
        fired.append(nxt)
        after = nxt
    return fired


# --- local_instant -----------------------------------------------------------------------------


def test_local_instant_plain_times_and_utc_result() -> None:
    winter = local_instant(date(2026, 1, 15), time(9, 0), BERLIN)
    assert winter == utc(2026, 1, 15, 8)
    assert winter.tzinfo is UTC
    assert local_instant(date(2026, 7, 15), time(9, 0), BERLIN) == utc(2026, 7, 15, 7)


def test_local_instant_berlin_spring_forward_gap_is_the_transition_instant() -> None:
    day = date(2026, 3, 29)  # 02:00 CET -> 03:00 CEST at 01:00 UTC
    assert local_instant(day, time(1, 59), BERLIN) == utc(2026, 3, 29, 0, 59)
    assert local_instant(day, time(2, 0), BERLIN) == utc(2026, 3, 29, 1)
    assert local_instant(day, time(2, 30), BERLIN) == utc(2026, 3, 29, 1)
    assert local_instant(day, time(2, 59), BERLIN) == utc(2026, 3, 29, 1)
    assert local_instant(day, time(3, 0), BERLIN) == utc(2026, 3, 29, 1)
    assert local_instant(day, time(3, 1), BERLIN) == utc(2026, 3, 29, 1, 1)


def test_local_instant_berlin_fall_back_overlap_is_the_first_occurrence() -> None:
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): take the first.
    assert local_instant(date(2026, 10, 25), time(2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert local_instant(date(2026, 10, 26), time(2, 30), BERLIN) == utc(2026, 10, 26, 1, 30)


def test_local_instant_new_york_gap_and_overlap() -> None:
    # 2026-03-08 02:00 EST -> 03:00 EDT at 07:00 UTC.
    assert local_instant(date(2026, 3, 8), time(2, 30), NEW_YORK) == utc(2026, 3, 8, 7)
    # 2026-11-01 01:30 happens at 05:30 UTC (EDT) and 06:30 UTC (EST).
    assert local_instant(date(2026, 11, 1), time(1, 30), NEW_YORK) == utc(2026, 11, 1, 5, 30)


def test_local_instant_half_hour_gap_and_whole_skipped_day() -> None:
    # Lord Howe springs forward 30 minutes: 02:00 +10:30 -> 02:30 +11 at 15:30 UTC the day before.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert local_instant(date(2026, 10, 4), time(2, 15), lord_howe) == utc(2026, 10, 3, 15, 30)
    # Samoa skipped 2011-12-30 entirely (-10 -> +14 at 10:00 UTC): any time that day -> 10:00 UTC.
    apia = ZoneInfo("Pacific/Apia")
    assert local_instant(date(2011, 12, 30), time(0, 0), apia) == utc(2011, 12, 30, 10)
    assert local_instant(date(2011, 12, 30), time(23, 59), apia) == utc(2011, 12, 30, 10)
    assert local_instant(date(2011, 12, 31), time(0, 0), apia) == utc(2011, 12, 30, 10)


# --- next_reminder_at: DST ---------------------------------------------------------------------


def test_berlin_spring_forward_daily_reminders() -> None:
    assert chain(time(9, 0), utc(2026, 3, 27, 12), 3, BERLIN) == [
        utc(2026, 3, 28, 8),  # CET, +01:00
        utc(2026, 3, 29, 7),  # CEST, +02:00 from 01:00 UTC on
        utc(2026, 3, 30, 7),
    ]
    # A 02:30 reminder on the spring-forward day fires when the clock jumps to 03:00.
    assert chain(time(2, 30), utc(2026, 3, 28, 12), 2, BERLIN) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0, 30),
    ]


def test_berlin_fall_back_fires_once_on_the_doubled_wall_time() -> None:
    fired = chain(time(2, 30), utc(2026, 10, 24, 12), 3, BERLIN)
    assert fired == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]
    # Exactly one firing per local day: the second 02:30 (01:30 UTC on the 25th) is skipped.
    assert [f.astimezone(BERLIN).date() for f in fired] == [
        date(2026, 10, 25),
        date(2026, 10, 26),
        date(2026, 10, 27),
    ]
    # Asked during the repeated hour (after the first 02:30), the next one is the next day's.
    assert daily(time(2, 30), utc(2026, 10, 25, 1)) == utc(2026, 10, 26, 1, 30)
    assert daily(time(9, 0), utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 8)


def test_new_york_spring_forward_and_fall_back() -> None:
    assert chain(time(9, 0), utc(2026, 3, 7, 0), 2, NEW_YORK) == [
        utc(2026, 3, 7, 14),  # EST, -05:00
        utc(2026, 3, 8, 13),  # EDT, -04:00
    ]
    assert daily(time(2, 30), utc(2026, 3, 7, 12), NEW_YORK) == utc(2026, 3, 8, 7)
    assert chain(time(1, 30), utc(2026, 10, 31, 12), 2, NEW_YORK) == [
        utc(2026, 11, 1, 5, 30),  # first 01:30 (EDT); the second one (06:30 UTC) is skipped
        utc(2026, 11, 2, 6, 30),  # EST
    ]


def test_zone_change_same_wall_time_different_instant() -> None:
    def at_nine(zone: ZoneInfo) -> datetime | None:
        return daily(time(9, 0), utc(2026, 6, 9, 12), zone, anchor=date(2026, 6, 1))

    assert at_nine(BERLIN) == utc(2026, 6, 10, 7)
    assert at_nine(TOKYO) == utc(2026, 6, 10, 0)  # 21:00 JST already: 09:00 JST tomorrow


# --- next_reminder_at: dates, phase, deadline --------------------------------------------------


def every(
    frequency_days: int, anchor: date, after: datetime, deadline: date | None = None
) -> datetime | None:
    """A 09:00 reminder in UTC, so that the expected instants read as plain dates."""
    return next_reminder_at(
        anchor=anchor,
        remind_time=time(9, 0),
        frequency_days=frequency_days,
        zone=ZoneInfo("UTC"),
        after=after,
        deadline=deadline,
    )


def test_frequencies_across_month_ends() -> None:
    anchor = date(2026, 1, 30)
    assert every(3, anchor, utc(2026, 1, 1)) == utc(2026, 1, 30, 9)  # the anchor itself
    assert every(3, anchor, utc(2026, 1, 30, 9)) == utc(2026, 2, 2, 9)
    assert every(3, anchor, utc(2026, 2, 2, 9)) == utc(2026, 2, 5, 9)
    assert every(2, date(2026, 2, 27), utc(2026, 2, 27, 10)) == utc(2026, 3, 1, 9)
    assert every(2, date(2028, 2, 28), utc(2028, 2, 28, 10)) == utc(2028, 3, 1, 9)  # leap: 29th
    assert every(2, date(2027, 2, 28), utc(2027, 2, 28, 10)) == utc(2027, 3, 2, 9)  # no 29th
    assert every(3, date(2026, 12, 30), utc(2026, 12, 31)) == utc(2027, 1, 2, 9)  # year end


def test_strictly_after_and_time_already_passed_today() -> None:
    anchor = date(2026, 5, 1)
    assert every(1, anchor, utc(2026, 5, 10, 8, 59)) == utc(2026, 5, 10, 9)
    assert every(1, anchor, utc(2026, 5, 10, 9)) == utc(2026, 5, 11, 9)  # equal -> next one
    assert every(1, anchor, utc(2026, 5, 10, 12)) == utc(2026, 5, 11, 9)
    # Every 3 days: 05-01, 05-04, 05-07, 05-10, 05-13. A non-occurrence day -> the next date.
    assert every(3, anchor, utc(2026, 5, 10, 9)) == utc(2026, 5, 13, 9)
    assert every(3, anchor, utc(2026, 5, 11, 8)) == utc(2026, 5, 13, 9)
    # In the user's zone: 23:30 UTC on the 9th is already the 10th, 09:00 passed in Tokyo.
    reminder = next_reminder_at(
        anchor=anchor,
        remind_time=time(9, 0),
        frequency_days=1,
        zone=TOKYO,
        after=utc(2026, 5, 10, 0, 30),
    )
    assert reminder == utc(2026, 5, 11, 0)


def test_deadline_day_is_allowed_the_day_after_is_not() -> None:
    anchor = date(2026, 5, 1)  # weekly: 05-01, 05-08, 05-15, 05-22
    assert every(7, anchor, utc(2026, 5, 8, 9), deadline=date(2026, 5, 15)) == utc(2026, 5, 15, 9)
    assert every(7, anchor, utc(2026, 5, 15, 9), deadline=date(2026, 5, 15)) is None
    assert every(7, anchor, utc(2026, 5, 8, 9), deadline=date(2026, 5, 14)) is None
    assert every(7, anchor, utc(2026, 4, 1), deadline=date(2026, 5, 1)) == utc(2026, 5, 1, 9)
    # The deadline is a local date: 23:30 in Berlin on the deadline day is 21:30 UTC.
    late = next_reminder_at(
        anchor=anchor,
        remind_time=time(23, 30),
        frequency_days=1,
        zone=BERLIN,
        after=utc(2026, 5, 15, 12),
        deadline=date(2026, 5, 15),
    )
    assert late == utc(2026, 5, 15, 21, 30)


def test_anchor_far_in_the_past_keeps_its_phase_without_looping() -> None:
    # 2026-05-10 is 9626 days after 2000-01-01 (9626 % 3 == 2): occurrences are 05-08 and 05-11.
    anchor = date(2000, 1, 1)
    assert (date(2026, 5, 11) - anchor).days % 3 == 0
    with patch.object(schedule, "local_instant", wraps=schedule.local_instant) as spy:
        reminder = next_reminder_at(
            anchor=anchor,
            remind_time=time(9, 0),
            frequency_days=3,
            zone=BERLIN,
            after=utc(2026, 5, 10, 12),
        )
    assert reminder == utc(2026, 5, 11, 7)
    assert spy.call_count <= 2
    assert every(3, anchor, utc(2026, 5, 11, 9)) == utc(2026, 5, 14, 9)


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe")])
@pytest.mark.parametrize("frequency_days", [1, 2, 3, 7])
@pytest.mark.parametrize("remind_time", [time(0, 0), time(1, 30), time(2, 30), time(9, 15)])
def test_matches_a_brute_force_walk_from_the_anchor(
    zone: ZoneInfo, frequency_days: int, remind_time: time
) -> None:
    """Every 37 minutes across both 2026 DST changes, against stepping k = 0, 1, 2, ..."""
    anchor = date(2026, 2, 20)
    occurrences = [
        local_instant(anchor + timedelta(days=k * frequency_days), remind_time, zone)
        for k in range(400 // frequency_days)
    ]
    after = utc(2026, 2, 15)
    while after < utc(2026, 11, 20):
        expected = next(o for o in occurrences if o > after)
        actual = next_reminder_at(
            anchor=anchor,
            remind_time=remind_time,
            frequency_days=frequency_days,
            zone=zone,
            after=after,
        )
        assert actual == expected, after
        after += timedelta(minutes=37)


def test_reminder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="frequency_days"):
        every(0, date(2026, 1, 1), utc(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        every(1, date(2026, 1, 1), datetime(2026, 1, 1, 12))  # noqa: DTZ001


# --- next_digest_at ----------------------------------------------------------------------------


def digest(
    times: list[time], after: datetime, frequency: str = "daily", weekday: int = 0
) -> datetime | None:
    return next_digest_at(
        times=times, frequency=frequency, weekday=weekday, zone=BERLIN, after=after
    )


def test_digest_daily_with_several_unsorted_times() -> None:
    times = [time(18, 0), time(8, 30), time(12, 0)]  # CEST: 16:00, 06:30, 10:00 UTC
    assert digest(times, utc(2026, 5, 10, 0)) == utc(2026, 5, 10, 6, 30)
    assert digest(times, utc(2026, 5, 10, 9)) == utc(2026, 5, 10, 10)
    assert digest(times, utc(2026, 5, 10, 10)) == utc(2026, 5, 10, 16)  # strictly after
    assert digest(times, utc(2026, 5, 10, 16)) == utc(2026, 5, 11, 6, 30)
    assert digest(times, utc(2026, 5, 10, 23)) == utc(2026, 5, 11, 6, 30)  # 01:00 local, 11th


def test_digest_weekly_on_the_given_weekday() -> None:
    # 2026-05-10 is a Sunday; weekday 0 = Monday (05-11, 05-18).
    times = [time(20, 0), time(8, 30)]
    assert digest(times, utc(2026, 5, 10, 9), "weekly", 0) == utc(2026, 5, 11, 6, 30)
    assert digest(times, utc(2026, 5, 11, 7), "weekly", 0) == utc(2026, 5, 11, 18)
    assert digest(times, utc(2026, 5, 11, 18), "weekly", 0) == utc(2026, 5, 18, 6, 30)
    assert digest(times, utc(2026, 5, 10, 6), "weekly", 6) == utc(2026, 5, 10, 6, 30)  # Sunday
    assert digest(times, utc(2026, 5, 10, 19), "weekly", 6) == utc(2026, 5, 17, 6, 30)


def test_digest_off_or_without_times_is_none() -> None:
    assert digest([time(9, 0)], utc(2026, 5, 10), "off") is None
    assert digest([], utc(2026, 5, 10), "daily") is None
    assert digest([], utc(2026, 5, 10), "weekly", 3) is None


def test_digest_across_dst_gap_and_overlap() -> None:
    assert digest([time(2, 30)], utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1)
    assert digest([time(2, 30)], utc(2026, 3, 23), "weekly", 6) == utc(2026, 3, 29, 1)
    assert digest([time(2, 30)], utc(2026, 3, 29, 1)) == utc(2026, 3, 30, 0, 30)
    assert digest([time(9, 0)], utc(2026, 3, 28, 8)) == utc(2026, 3, 29, 7)
    # Overlap: the first 02:30 only, then the next day's.
    assert digest([time(2, 30)], utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 0, 30)
    assert digest([time(2, 30)], utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_digest_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="frequency"):
        digest([time(9, 0)], utc(2026, 5, 10), "hourly")
    with pytest.raises(ValueError, match="weekday"):
        digest([time(9, 0)], utc(2026, 5, 10), "weekly", 7)
