"""Wall-clock times in a time zone, turned into UTC instants, DST-safe: a kernel helper for every
domain that fires something at the user's local time (scheduling's reminders and digests,
notifications' quiet hours)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock `at` on `day` in `zone` (a tzinfo on `at` is ignored).

    DST gap (the wall time does not exist): the transition instant, i.e. the first valid instant
    after the gap (02:30 on Berlin's spring-forward day -> 03:00 CEST = 01:00 UTC).
    DST overlap (the wall time happens twice): the first occurrence (fold=0).
    """
    wall = datetime.combine(day, at.replace(tzinfo=None, fold=0))
    # PEP 495: fold=0 resolves with the offset in force *before* a transition, which is the
    # first occurrence in an overlap; in a gap it gives an instant that lands after the gap.
    before = wall.replace(tzinfo=zone)
    instant = before.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant  # the wall time exists (round trip gives it back)
    # Gap. With the pre-transition offset the wall time maps to an instant at or after the
    # transition; with the post-transition offset (fold=1) to one before it. The transition
    # itself is not exposed by zoneinfo, so bisect between the two. tzdata transitions are on
    # whole seconds, and gaps are at most a day (Samoa, 2011), so this is ~17 steps.
    post_offset = wall.replace(tzinfo=zone, fold=1).utcoffset()
    lo = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())  # before the transition
    hi = math.ceil(instant.timestamp())  # at or after the transition
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == post_offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
