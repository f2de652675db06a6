"""Habits: which local dates are due, and the figures a habit shows (streak, done and due today,
completion over 30 days).

Pure functions over *local dates* (no clock, no zone, no I/O): the caller passes the user's local
`today`, so a DST day is one day like any other, and flying east across the date line moves
`today` by a calendar day, never by a count of hours. A check-in's date is the user's local date
at the moment it was made and is never rewritten.

A local date is a `Day`: its day number (`date.toordinal()`, which PostgreSQL's `day_number`
in goals.queries matches), so the arithmetic below is on ints, not `date` objects — a list of
habits computes every habit's figures on each read.

A schedule's *periods* are what a streak counts: its due days (`daily`, `weekdays`,
`every_n_days`), or local ISO weeks (`times_per_week`, done with at least `times` check-ins).
A period that is not over yet never breaks a streak.

The reads stay flat (a 5-year-old habit costs what a new one costs): on every check-in or undo the
write stores a `Summary` — the run of done periods ending at the latest done one, the longest run,
and the last 64 days of check-ins as a bit mask — and a read derives today's figures from it alone,
by bit arithmetic on the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from functools import lru_cache
from typing import Any, Literal, NamedTuple

ScheduleType = Literal["daily", "weekdays", "times_per_week", "every_n_days"]
Day = int  # a local date as its day number: date.toordinal(), 1 = Monday 1 January of year 1
# Days a Summary's mask covers: the 30-day window plus the current ISO week, with room.
MASK_DAYS = 64
ALL_DAYS = (1 << MASK_DAYS) - 1
RATE_WINDOW_DAYS = 30
NO_DAYS: frozenset[int] = frozenset()


def as_date(day: Day | None) -> date | None:
    """A day number as the date columns hold it."""
    return None if day is None else date.fromordinal(day)


def weekday(day: Day) -> int:
    """0 = Monday, as `date.weekday()`."""
    return (day + 6) % 7


# NamedTuples, not dataclasses: a list builds one of each per habit on every read, and a frozen
# dataclass costs twice as much to build.
class Schedule(NamedTuple):
    type: ScheduleType
    start: Day  # the habit's creation date (local): nothing before it is due
    days: frozenset[int] = NO_DAYS  # weekdays: 0 = Monday
    times: int = 1  # times_per_week: check-ins a week (the stored schedule's `count`)
    n: int = 1  # every_n_days, counted from `start`

    @property
    def weekly(self) -> bool:
        return self.type == "times_per_week"

    def is_due(self, day: Day) -> bool:
        """A due day of a day-based schedule; for `times_per_week` every day may count."""
        if day < self.start:
            return False
        if self.type == "weekdays":
            return weekday(day) in self.days
        if self.type == "every_n_days":
            return (day - self.start) % self.n == 0
        return True

    def latest_period(self, today: Day) -> Day | None:
        """The latest period that has begun by `today`, named by its first day: the due day
        itself, or the Monday of its ISO week (None before the first)."""
        if today < self.start:
            return None
        if self.weekly:
            return today - weekday(today)
        if self.type == "every_n_days":
            return today - (today - self.start) % self.n
        if self.type == "weekdays":  # the nearest of its weekdays, this week or the last
            today -= min((weekday(today) - day) % 7 for day in self.days)
        return today if today >= self.start else None

    def previous_period(self, period: Day) -> Day | None:
        if self.weekly:
            return period - 7 if period - 1 >= self.start else None
        return self.latest_period(period - 1)

    @property
    def period_days(self) -> int:
        return 7 if self.weekly else 1

    def done(self, checkins: int) -> bool:
        """Whether a period with `checkins` check-ins is done."""
        return checkins >= (self.times if self.weekly else 1)


class Summary(NamedTuple):
    """What a read needs, kept on the habit's row and rewritten by every check-in and undo."""

    run: int = 0  # consecutive done periods ending at `run_end`
    run_end: Day | None = None  # the latest done period
    longest: int = 0
    mask: int = 0  # bit i: a check-in on mask_end - i days (i < MASK_DAYS)
    mask_end: Day | None = None  # the latest check-in's date


def as_bigint(mask: int) -> int:
    """The 64-day mask as PostgreSQL's signed BIGINT stores it (bit 63 set: a 64-day run). Its
    bits read back the same: Python's `>>` on a negative int keeps two's complement."""
    return mask - (1 << MASK_DAYS) if mask >= 1 << (MASK_DAYS - 1) else mask


def summarize(schedule: Schedule, checkins: Iterable[Day]) -> Summary:
    """The Summary of a habit's check-ins (any order). Walks the periods from the first check-in
    to the last: a write's cost, never a read's."""
    checked = set(checkins)
    if not checked:
        return Summary()
    last = max(checked)
    mask = sum(1 << (last - day) for day in checked if last - day < MASK_DAYS)
    periods: list[Day] = []
    period = schedule.latest_period(last)
    first = min(checked)
    while period is not None and period + schedule.period_days > first:
        periods.append(period)
        period = schedule.previous_period(period)
    run = longest = current = 0
    run_end: Day | None = None
    for period in reversed(periods):  # oldest first
        inside = range(period, period + schedule.period_days)
        if schedule.done(sum(day in checked for day in inside)):
            current += 1
            run, run_end, longest = current, period, max(longest, current)
        else:
            current = 0
    return Summary(run=run, run_end=run_end, longest=longest, mask=mask, mask_end=last)


class Today(NamedTuple):
    streak_current: int
    streak_longest: int
    due_today: bool
    done_today: bool
    completion_rate_30d: int


def _span(first: int, last: int) -> int:
    """Bits `first`..`last` set (none when `last` < `first`)."""
    return (1 << (last + 1)) - (1 << first) if last >= first else 0


def today_figures(schedule: Schedule, summary: Summary, today: Day) -> Today:
    """The habit as it stands on the user's local `today`, from its Summary alone: a few integer
    operations on the mask, whatever the habit's age."""
    run, run_end, longest, mask, mask_end = summary
    mask &= ALL_DAYS  # unsigned again, as stored signed
    end = today if mask_end is None else mask_end
    # Bit j of `recent`: a check-in on `today` - j days (days after `today` fall off).
    recent = mask >> (end - today) if end >= today else mask << (today - end)
    # A check-in dated after `today` means the user's local date went back (flown east across
    # the date line): the run it ends still stands, so the streak is judged from that date.
    judged = today if run_end is None else max(today, run_end)
    # The period now running does not break the streak until it is over.
    counted = schedule.latest_period(judged)
    period_days = schedule.period_days
    if counted is not None and judged < counted + period_days:
        oldest = end - counted  # the period's first day, as a bit of the mask
        inside = _span(max(oldest - period_days + 1, 0), min(oldest, MASK_DAYS - 1))
        if not schedule.done((mask & inside).bit_count()):
            counted = schedule.previous_period(counted)
    streak = run if counted is not None and run_end == counted else 0
    if period_days == 7:  # times_per_week: due while this week's count is not reached
        before_today = (recent & _span(1, weekday(today))).bit_count()
        due_today = today >= schedule.start and before_today < schedule.times
    else:
        due_today = schedule.is_due(today)
    return Today(streak, longest, due_today, bool(recent & 1), _rate(schedule, recent, today))


def _rate(schedule: Schedule, recent: int, today: Day) -> int:
    """Done ÷ due over the last 30 local days (today only once done), 0–100, rounded down.
    `times_per_week`: check-ins (at most `times` per ISO week) ÷ `times` per 7 days.
    `recent` is the mask as of `today` (bit j: `today` - j days)."""
    newest = 0 if recent & 1 else 1
    oldest = min(RATE_WINDOW_DAYS - 1, today - schedule.start)
    window = _span(newest, oldest)
    if not window:
        return 0
    if not schedule.weekly:
        due = window if schedule.type == "daily" else _due_days(schedule, today) & window
        return 100 * (recent & due).bit_count() // due.bit_count() if due else 0
    # The ISO weeks the window touches, newest first: this week is 0..weekday days ago.
    done, week_newest, week_oldest = 0, 0, weekday(today)
    while week_newest <= oldest:
        done += min((recent & window & _span(week_newest, week_oldest)).bit_count(), schedule.times)
        week_newest, week_oldest = week_oldest + 1, week_oldest + 7
    expected = schedule.times * (oldest - newest + 1) / 7
    return min(100, int(100 * done / expected))


def _due_days(schedule: Schedule, today: Day) -> int:
    """Bit j set: `today` - j days is due (of the last 30; the rate's window cuts the days before
    the start), for weekdays and every_n_days."""
    if schedule.type == "weekdays":
        return _weekday_pattern(schedule.days, weekday(today))
    return _every_pattern(schedule.n, (today - schedule.start) % schedule.n)


# Few distinct keys (a weekday set and today's weekday; a step and a phase), shared by all habits.
@lru_cache(maxsize=1024)
def _weekday_pattern(days: frozenset[int], today_weekday: int) -> int:
    return sum(1 << j for j in range(RATE_WINDOW_DAYS) if (today_weekday - j) % 7 in days)


@lru_cache(maxsize=1024)
def _every_pattern(n: int, phase: int) -> int:
    return sum(1 << j for j in range(phase, RATE_WINDOW_DAYS, n))


def schedule_of(stored: Mapping[str, Any], start: Day) -> Schedule:
    """A habit's schedule as stored (the request's HabitSchedule, as JSON) and its first day."""
    days = stored.get("days")
    return Schedule(
        stored["type"],
        start,
        frozenset(days) if days else NO_DAYS,
        stored.get("count", 1),
        stored.get("n", 1),
    )
