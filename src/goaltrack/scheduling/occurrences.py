"""Occurrences of reminders and digests: wall-clock times in the user's zone, turned into UTC instants.

Pure functions (no I/O, no clock): callers pass `after` (usually "now") and get the next instant
to fire at. Every occurrence is computed from its *local date* and wall time, never by adding
N*86400 seconds to a previous instant, so a 09:00 reminder stays at 09:00 across DST changes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

# The wall-clock conversion lives in the kernel (notifications' quiet hours use it too); its name
# stays importable from here.
from goaltrack.wallclock import local_instant as local_instant

DIGEST_FREQUENCIES = ("off", "daily", "weekly")


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One occurrence of a schedule: the instant it fires, and the local date and wall time it
    belongs to. The date is the occurrence's own even when a DST gap pushes its instant past
    midnight (a 23:30 reminder on Nuuk's spring-forward Saturday fires at Sunday 00:00 but is
    Saturday's): the scheduler sends each (schedule, local date) once."""

    at: datetime
    day: date
    time: time


def _local_date(after: datetime, zone: ZoneInfo) -> date:
    # A naive datetime would silently be read in the server's zone by astimezone(): refuse it.
    if after.utcoffset() is None:
        raise ValueError("`after` must be timezone-aware")
    return after.astimezone(zone).date()


def reminder_days(
    *, anchor: date, frequency_days: int | None, weekdays: Collection[int] | None, first: date
) -> Iterator[date]:
    """A reminder's local dates from `first` on: anchor + k*frequency_days (k >= 0), or every
    date on one of `weekdays` (0 = Monday) from the anchor on. Exactly one rhythm is given."""
    if (frequency_days is None) == (weekdays is None):
        raise ValueError("give exactly one of frequency_days and weekdays")
    if weekdays is not None:
        if not weekdays or not set(weekdays) <= set(range(7)):
            raise ValueError("weekdays must be 1-7 of 0 (Monday) .. 6 (Sunday)")
        day = max(first, anchor)
        while True:
            if day.weekday() in weekdays:
                yield day
            day += timedelta(days=1)
    assert frequency_days is not None
    if frequency_days < 1:
        raise ValueError("frequency_days must be >= 1")
    # Jump straight to the first date on or after `first` (ceil division; k >= 0 so an anchor in
    # the future is the first one).
    elapsed = (first - anchor).days
    day = anchor + timedelta(days=max(0, -(-elapsed // frequency_days)) * frequency_days)
    while True:
        yield day
        day += timedelta(days=frequency_days)


def next_reminder(
    *,
    anchor: date,
    remind_time: time,
    zone: ZoneInfo,
    after: datetime,
    frequency_days: int | None = None,
    weekdays: Collection[int] | None = None,
    deadline: date | None = None,
) -> Occurrence | None:
    """The first occurrence strictly after `after`, or None if it falls after `deadline`.

    Occurrences are the reminder's dates (`reminder_days`) at `remind_time` in `zone`. The
    deadline day itself is allowed (the goal is due by the end of that day, user's zone).
    """
    # Start from the local date of `after`: earlier dates cannot fire later (even a wall time
    # pushed forward by a gap lands no later than any instant of `after`'s local date). Then at
    # most a step or two if that day's time has passed.
    for day in reminder_days(
        anchor=anchor,
        frequency_days=frequency_days,
        weekdays=weekdays,
        first=_local_date(after, zone),
    ):
        if deadline is not None and day > deadline:
            return None
        instant = local_instant(day, remind_time, zone)
        if instant > after:
            return Occurrence(instant, day, remind_time)
    raise AssertionError("unreachable: a rhythm's dates never end")


def next_digest(
    *,
    times: Sequence[time],
    frequency: str,
    weekday: int,
    zone: ZoneInfo,
    after: datetime,
) -> Occurrence | None:
    """The next digest strictly after `after`, or None when digests are off.

    'daily': the first of (each local date, each time in `times`); 'weekly': the same, only on
    local dates whose weekday() == `weekday` (0 = Monday). `times` need not be sorted; empty
    means no digest. Wall times go through `local_instant` (gap -> transition, overlap -> first).
    """
    if frequency not in DIGEST_FREQUENCIES:
        raise ValueError(f"unknown digest frequency: {frequency!r}")
    if frequency == "weekly" and not 0 <= weekday <= 6:
        raise ValueError("weekday must be 0 (Monday) .. 6 (Sunday)")
    if frequency == "off" or not times:
        return None
    start = _local_date(after, zone)
    # Any instant on a later local date is later than every instant on an earlier one, so the
    # answer is the earliest candidate of the first eligible day that still has one. Every time
    # of the next eligible day is after `after`, so 2 days (daily) or 8 (weekly) always suffice.
    for offset in range(8 if frequency == "weekly" else 2):
        day = start + timedelta(days=offset)
        if frequency == "weekly" and day.weekday() != weekday:
            continue
        # Times that a DST gap folds onto one instant make one digest (the earliest time's):
        # two identical digests at the same moment would only be noise.
        upcoming = [
            Occurrence(instant, day, at)
            for at in sorted(times)
            if (instant := local_instant(day, at, zone)) > after
        ]
        if upcoming:
            return min(upcoming, key=lambda occurrence: occurrence.at)
    raise AssertionError("unreachable: the window always contains an eligible day")
