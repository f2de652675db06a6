"""Each user's next digest (`user_settings.next_digest_at`), from their digest times and zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from goaltrack.profile.models import UserSettings
from goaltrack.scheduling.occurrences import next_digest


def schedule_digest(row: UserSettings, after: datetime) -> None:
    """The next digest after `after`. A digest already sent for a (local date, time) is never
    sent again (the scheduler's ledger), so a zone change cannot repeat one."""
    occurrence = next_digest(
        times=row.notification_times,
        frequency=row.notification_frequency,
        weekday=row.notification_weekday,
        zone=ZoneInfo(row.timezone),
        after=after,
    )
    row.next_digest_at = occurrence.at if occurrence else None
    row.next_digest_date = occurrence.day if occurrence else None
    row.next_digest_time = occurrence.time if occurrence else None
