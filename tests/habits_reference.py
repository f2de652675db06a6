"""The habit rules as first written, day by day over `date` objects: slow and obvious, kept as the
oracle that the product's day numbers and bit-mask arithmetic (goaltrack.goals.habits) are checked
against."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

ScheduleType = Literal["daily", "weekdays", "times_per_week", "every_n_days"]
ONE_DAY = timedelta(days=1)
WEEK = timedelta(days=7)
# Days a Summary's mask covers: the 30-day window plus the current ISO week, with room.
MASK_DAYS = 64
RATE_WINDOW_DAYS = 30


@dataclass(frozen=True, slots=True)
class Schedule:
    type: ScheduleType
    start: date  # the habit's creation date (local): nothing before it is due
    days: frozenset[int] = frozenset()  # weekdays: 0 = Monday
    count: int = 1  # times_per_week
    n: int = 1  # every_n_days, counted from `start`

    @property
    def weekly(self) -> bool:
        return self.type == "times_per_week"

    def is_due(self, day: date) -> bool:
        """A due day of a day-based schedule; for `times_per_week` every day may count."""
        if day < self.start:
            return False
        if self.type == "weekdays":
            return day.weekday() in self.days
        if self.type == "every_n_days":
            return (day - self.start).days % self.n == 0
        return True

    def period_of(self, day: date) -> date | None:
        """The period `day` falls in, named by its first day: the due day itself, or the
        Monday of its ISO week; None for a day that is not due (or before the start)."""
        if self.weekly:
            monday = day - timedelta(days=day.weekday())
            return monday if day >= self.start else None
        return day if self.is_due(day) else None

    def latest_period(self, today: date) -> date | None:
        """The latest period that has begun by `today` (None before the first)."""
        if self.weekly:
            return self.period_of(today)
        if self.type == "every_n_days":
            if today < self.start:
                return None
            return today - timedelta(days=(today - self.start).days % self.n)
        day = today
        for _ in range(7):  # a weekdays schedule has a due day in every week
            if self.is_due(day):
                return day
            day -= ONE_DAY
        return None

    def previous_period(self, period: date) -> date | None:
        if self.weekly:
            previous = period - WEEK
            return previous if previous + WEEK - ONE_DAY >= self.start else None
        return self.latest_period(period - ONE_DAY)

    def contains(self, period: date, day: date) -> bool:
        """Whether `day` falls in `period` (a period is over once `day` is past it)."""
        return period <= day < period + (WEEK if self.weekly else ONE_DAY)


def _done(schedule: Schedule, period: date, checked: set[date]) -> bool:
    if schedule.weekly:
        week = (period + timedelta(days=offset) for offset in range(7))
        return sum(day in checked for day in week) >= schedule.count
    return period in checked


@dataclass(frozen=True, slots=True)
class Summary:
    """What a read needs, kept on the habit's row and rewritten by every check-in and undo."""

    run: int = 0  # consecutive done periods ending at `run_end`
    run_end: date | None = None  # the latest done period
    longest: int = 0
    mask: int = 0  # bit i: a check-in on mask_end - i days (i < MASK_DAYS)
    mask_end: date | None = None  # the latest check-in's date


def summarize(schedule: Schedule, checkins: Iterable[date]) -> Summary:
    """The Summary of a habit's check-ins (any order). Walks the periods from the first check-in
    to the last: a write's cost, never a read's."""
    checked = set(checkins)
    if not checked:
        return Summary()
    last = max(checked)
    mask = sum(1 << (last - day).days for day in checked if (last - day).days < MASK_DAYS)
    periods: list[date] = []
    period = schedule.latest_period(last)
    first = min(checked)
    while period is not None and period + (WEEK if schedule.weekly else ONE_DAY) > first:
        periods.append(period)
        period = schedule.previous_period(period)
    run = longest = current = 0
    run_end: date | None = None
    for period in reversed(periods):  # oldest first
        if _done(schedule, period, checked):
            current += 1
            run, run_end, longest = current, period, max(longest, current)
        else:
            current = 0
    return Summary(run=run, run_end=run_end, longest=longest, mask=mask, mask_end=last)


@dataclass(frozen=True, slots=True)
class Today:
    streak_current: int
    streak_longest: int
    due_today: bool
    done_today: bool
    completion_rate_30d: int


def _checked(summary: Summary, day: date) -> bool:
    if summary.mask_end is None:
        return False
    age = (summary.mask_end - day).days
    return 0 <= age < MASK_DAYS and bool(summary.mask >> age & 1)


def today_figures(schedule: Schedule, summary: Summary, today: date) -> Today:
    """The habit as it stands on the user's local `today`, from its Summary alone."""
    done_today = _checked(summary, today)
    # A check-in dated after `today` means the user's local date went back (flown east across
    # the date line): the run it ends still stands, so the streak is judged from that date.
    judged = max(today, summary.run_end) if summary.run_end is not None else today
    # The period now running does not break the streak until it is over.
    counted = schedule.latest_period(judged)
    running = counted is not None and schedule.contains(counted, judged)
    if counted is not None and running and not _done_from_mask(schedule, summary, counted):
        counted = schedule.previous_period(counted)
    streak = summary.run if counted is not None and summary.run_end == counted else 0
    if schedule.weekly:
        monday = today - timedelta(days=today.weekday())
        before_today = sum(
            _checked(summary, monday + timedelta(days=i)) for i in range(today.weekday())
        )
        due_today = today >= schedule.start and before_today < schedule.count
    else:
        due_today = schedule.is_due(today)
    return Today(
        streak_current=streak,
        streak_longest=summary.longest,
        due_today=due_today,
        done_today=done_today,
        completion_rate_30d=_rate(schedule, summary, today, done_today),
    )


def _done_from_mask(schedule: Schedule, summary: Summary, period: date) -> bool:
    if schedule.weekly:
        return (
            sum(_checked(summary, period + timedelta(days=i)) for i in range(7)) >= schedule.count
        )
    return _checked(summary, period)


def _rate(schedule: Schedule, summary: Summary, today: date, done_today: bool) -> int:
    """Done ÷ due over the last 30 local days (today only once done), 0–100, rounded down.
    `times_per_week`: check-ins (at most `count` per ISO week) ÷ `count` per 7 days."""
    first = max(today - timedelta(days=RATE_WINDOW_DAYS - 1), schedule.start)
    last = today if done_today else today - ONE_DAY
    if last < first:
        return 0
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if not schedule.weekly:
        due = [day for day in days if schedule.is_due(day)]
        done = sum(_checked(summary, day) for day in due)
        return 100 * done // len(due) if due else 0
    weeks: dict[date, list[date]] = {}
    for day in days:
        weeks.setdefault(day - timedelta(days=day.weekday()), []).append(day)
    done = sum(
        min(sum(_checked(summary, day) for day in week), schedule.count) for week in weeks.values()
    )
    expected = schedule.count * len(days) / 7
    return min(100, int(100 * done / expected)) if expected else 0
