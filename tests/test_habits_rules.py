"""The habit rules on local dates (goaltrack.goals.habits): due days, streaks, today's figures."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import habits_reference as reference
from goaltrack.goals.habits import (
    Schedule,
    ScheduleType,
    Today,
    as_bigint,
    summarize,
    today_figures,
)

MONDAY = date(2026, 3, 2)


def days(*offsets: int, start: date = MONDAY) -> list[date]:
    return [start + timedelta(days=offset) for offset in offsets]


def schedule(
    type_: ScheduleType,
    start: date,
    *,
    days: frozenset[int] = frozenset(),
    times: int = 1,
    n: int = 1,
) -> Schedule:
    return Schedule(type_, start.toordinal(), days, times, n)


def today_of(schedule: Schedule, checkins: list[date], today: date) -> Today:
    summary = summarize(schedule, [day.toordinal() for day in checkins])
    return today_figures(schedule, summary, today.toordinal())


def figures(schedule: Schedule, checkins: list[date], today: date) -> tuple[int, int, bool, bool]:
    result = today_of(schedule, checkins, today)
    return result.streak_current, result.streak_longest, result.due_today, result.done_today


def test_daily_streak_survives_the_day_not_over_and_breaks_after_a_missed_day() -> None:
    daily = schedule("daily", start=MONDAY)
    three = days(0, 1, 2)
    # Wednesday done: 3. Thursday not done yet: still 3 (the day is not over).
    assert figures(daily, three, MONDAY + timedelta(days=2)) == (3, 3, True, True)
    assert figures(daily, three, MONDAY + timedelta(days=3)) == (3, 3, True, False)
    # Friday: Thursday was missed.
    assert figures(daily, three, MONDAY + timedelta(days=4)) == (0, 3, True, False)
    # A backfilled Thursday mends it.
    assert figures(daily, days(0, 1, 2, 3), MONDAY + timedelta(days=4)) == (4, 4, True, False)


def test_weekdays_count_only_due_days() -> None:
    mon_wed_fri = schedule("weekdays", start=MONDAY, days=frozenset({0, 2, 4}))
    done = days(0, 2, 4, 7)  # Mon, Wed, Fri, next Mon
    # Next Tuesday (not due): the streak of 4 stands; Wednesday not over yet: still 4.
    assert figures(mon_wed_fri, done, MONDAY + timedelta(days=8)) == (4, 4, False, False)
    assert figures(mon_wed_fri, done, MONDAY + timedelta(days=9)) == (4, 4, True, False)
    assert figures(mon_wed_fri, done, MONDAY + timedelta(days=10)) == (0, 4, False, False)
    # A check-in on a day that is not due counts for nothing.
    assert figures(mon_wed_fri, days(1), MONDAY + timedelta(days=1)) == (0, 0, False, True)


def test_every_n_days_counts_from_the_start() -> None:
    every_3 = schedule("every_n_days", start=MONDAY, n=3)
    assert figures(every_3, days(0, 3, 6), MONDAY + timedelta(days=8)) == (3, 3, False, False)
    assert figures(every_3, days(0, 3, 6), MONDAY + timedelta(days=10)) == (0, 3, False, False)


def test_times_per_week_counts_local_iso_weeks() -> None:
    twice = schedule("times_per_week", start=MONDAY, times=2)
    # Week 1: Tue + Sun; week 2: Mon + Mon? no: one per date; Mon + Sat.
    done = days(1, 6, 7, 12)
    sunday_week2 = MONDAY + timedelta(days=13)
    assert figures(twice, done, sunday_week2)[:2] == (2, 2)
    # Week 3 running with one check-in: not over, the streak stands; due while below the count.
    week3 = [*done, MONDAY + timedelta(days=14)]
    assert figures(twice, week3, MONDAY + timedelta(days=15)) == (2, 2, True, False)
    # Week 3 over with one check-in: broken.
    assert figures(twice, week3, MONDAY + timedelta(days=21))[0] == 0


def test_a_dst_day_is_one_day_and_the_date_line_neither_breaks_nor_doubles() -> None:
    """Check-ins are local dates: Europe's spring-forward Sunday (23 h) is one day, and flying
    from Honolulu to Auckland (a calendar day skipped in local dates) or back (one repeated)
    changes the dates themselves, which is the rule: one check-in per local date."""
    daily = schedule("daily", start=date(2026, 3, 27))
    around_dst = [date(2026, 3, 28), date(2026, 3, 29), date(2026, 3, 30)]
    assert figures(daily, around_dst, date(2026, 3, 30))[:2] == (3, 3)
    # East across the date line: Thursday in Honolulu, then Saturday in Auckland. Friday was
    # never a local date the user lived: the streak stays only if a check-in covers it...
    # which the API allows as a backfill (7 days back), so one day never counts twice.
    flown = [date(2026, 6, 3), date(2026, 6, 4), date(2026, 6, 6)]
    assert figures(daily, flown, date(2026, 6, 6))[0] == 1
    assert figures(daily, [*flown, date(2026, 6, 5)], date(2026, 6, 6))[0] == 4


def test_flying_east_across_the_date_line_keeps_the_streak_and_the_day_once() -> None:
    """Auckland, Saturday 6 June done; flown to Honolulu it is Friday 5 June again (done there
    the day before): the local date went back, the run ending on Saturday still stands, and
    Friday, done already, cannot count twice (one check-in per date)."""
    daily = schedule("daily", start=date(2026, 6, 1))
    done = [date(2026, 6, 4), date(2026, 6, 5), date(2026, 6, 6)]
    streak, longest, due, done_today = figures(daily, done, date(2026, 6, 5))
    assert (streak, longest, due, done_today) == (3, 3, True, True)
    # Back on Saturday (and then Sunday, not done yet: the running day breaks nothing).
    assert figures(daily, done, date(2026, 6, 6))[0] == 3
    assert figures(daily, done, date(2026, 6, 7))[0] == 3
    # Friday missed before the flight: the run is Saturday's alone until Friday is backfilled.
    gap = [date(2026, 6, 4), date(2026, 6, 6)]
    assert figures(daily, gap, date(2026, 6, 5))[:2] == (1, 1)
    assert figures(daily, [*gap, date(2026, 6, 5)], date(2026, 6, 5))[0] == 3
    # The same with a weekly habit: a repeated Sunday never moves the ISO week back.
    twice = schedule("times_per_week", start=date(2026, 5, 25), times=2)
    weeks = [date(2026, 6, 2), date(2026, 6, 3), date(2026, 6, 8), date(2026, 6, 9)]
    assert figures(twice, weeks, date(2026, 6, 7))[0] == 2


@pytest.mark.parametrize(
    ("schedule", "checkins", "today", "rate"),
    [
        (schedule("daily", start=MONDAY - timedelta(days=60)), days(*range(-29, 1)), MONDAY, 100),
        (schedule("daily", start=MONDAY - timedelta(days=60)), days(*range(-29, 0, 2)), MONDAY, 51),
        # Today not done yet does not count against the rate.
        (schedule("daily", start=MONDAY - timedelta(days=60)), days(*range(-29, 0)), MONDAY, 100),
        # A habit two days old: only its days count.
        (schedule("daily", start=MONDAY - timedelta(days=1)), days(-1), MONDAY, 100),
        (schedule("times_per_week", start=MONDAY - timedelta(days=60), times=7), [], MONDAY, 0),
    ],
)
def test_completion_rate_over_30_days(
    schedule: Schedule, checkins: list[date], today: date, rate: int
) -> None:
    assert today_of(schedule, checkins, today).completion_rate_30d == rate


def test_a_five_year_habit_reads_from_its_summary_alone() -> None:
    start = date(2021, 1, 1)
    daily = schedule("daily", start=start)
    history = [start + timedelta(days=i) for i in range(1800)]
    summary = summarize(daily, [day.toordinal() for day in history])
    assert summary.run == summary.longest == 1800
    today = history[-1] + timedelta(days=1)
    assert today_figures(daily, summary, today.toordinal()).streak_current == 1800


SCHEDULES = st.one_of(
    st.just(("daily", frozenset[int](), 1, 1)),
    st.builds(
        lambda days: ("weekdays", frozenset(days), 1, 1),
        st.sets(st.integers(0, 6), min_size=1),
    ),
    st.builds(lambda times: ("times_per_week", frozenset[int](), times, 1), st.integers(1, 7)),
    st.builds(lambda n: ("every_n_days", frozenset[int](), 1, n), st.integers(2, 30)),
)


@given(
    kind=SCHEDULES,
    start_offset=st.integers(0, 6),
    done=st.lists(st.integers(0, 120), max_size=90),
    today_offset=st.integers(-2, 140),
    stored=st.booleans(),
)
# Flown east on a Friday after a Saturday check-in: Saturday belongs to no weekday's period.
@example(("weekdays", frozenset(range(5)), 1, 1), 0, [0, 1, 2, 3, 5], -1, False)
@settings(max_examples=3000, deadline=None)
def test_the_mask_arithmetic_agrees_with_the_day_by_day_reference(
    kind: tuple[ScheduleType, frozenset[int], int, int],
    start_offset: int,
    done: list[int],
    today_offset: int,
    stored: bool,
) -> None:
    """Day numbers and bit arithmetic on the 64-day mask: on any schedule, history and local date
    (also one before the latest check-in, as after flying east across the date line) the summary
    and today's figures equal the reference's, which walks `date`s day by day — also from the mask
    as PostgreSQL's BIGINT holds it."""
    type_, weekdays, times, n = kind
    start = MONDAY + timedelta(days=start_offset)
    checkins = [start + timedelta(days=offset) for offset in done]
    latest = max(checkins, default=start)
    today = max(start, latest + timedelta(days=today_offset))

    expected_schedule = reference.Schedule(type_, start=start, days=weekdays, count=times, n=n)
    expected_summary = reference.summarize(expected_schedule, checkins)
    expected = reference.today_figures(expected_schedule, expected_summary, today)

    ours = schedule(type_, start, days=weekdays, times=times, n=n)
    summary = summarize(ours, [day.toordinal() for day in checkins])
    assert summary == (
        expected_summary.run,
        expected_summary.run_end and expected_summary.run_end.toordinal(),
        expected_summary.longest,
        expected_summary.mask,
        expected_summary.mask_end and expected_summary.mask_end.toordinal(),
    )
    if stored:
        summary = summary._replace(mask=as_bigint(summary.mask))
    figures = today_figures(ours, summary, today.toordinal())
    assert figures == (
        expected.streak_current,
        expected.streak_longest,
        expected.due_today,
        expected.done_today,
        expected.completion_rate_30d,
    )
