"""Quiet hours: a daily window of the user's wall-clock time in which no push goes out. The feed
row is written at once; its push waits for the window's end (`notify` holds it in the outbox, and
the push task holds it again if it runs inside a window: a push queued just before, a retry).

Pure functions (no I/O, no clock). A window is the span between two instants: its start and its
end on their local dates, each through `wallclock.local_instant` (a wall time inside a DST gap is
the transition, a repeated one its first occurrence), so a window is never longer or shorter than
the wall clock says, and the push goes out at its end however the night was shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from goaltrack.wallclock import local_instant


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    @property
    def wraps_midnight(self) -> bool:
        return self.end < self.start

    @classmethod
    def of(cls, start: time | None, end: time | None) -> QuietHours | None:
        """From the settings row's two columns (both set or both NULL)."""
        return None if start is None or end is None else cls(start, end)


def quiet_until(hours: QuietHours | None, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The end of the quiet hours `now` is in (the instant a held push may go out), or None when
    `now` is outside them. A window holds its start and not its end."""
    if hours is None:
        return None
    today = now.astimezone(zone).date()
    # Only a window starting yesterday (wrapping midnight) or today can hold `now`.
    for first_day in (today - timedelta(days=1), today):
        start = local_instant(first_day, hours.start, zone)
        end = local_instant(first_day + timedelta(days=hours.wraps_midnight), hours.end, zone)
        if start <= now < end:
            return end
    return None
