"""Each user's next digest (`user_settings.next_digest_at`), from their digest times and zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from goaltrack.profile.models import UserSettings
from goaltrack.scheduling.occurrences import Occurrence, next_digest


def pending(row: UserSettings) -> Occurrence | None:
    """The digest the row waits for (`next_digest_at`), None when it has none."""
    if row.next_digest_at is None:
        return None
    local = row.next_digest_at.astimezone(ZoneInfo(row.timezone))
    return Occurrence(
        row.next_digest_at,
        row.next_digest_date or local.date(),
        row.next_digest_time or local.time().replace(tzinfo=None),
    )


def following(row: UserSettings, after: datetime) -> Occurrence | None:
    """The first digest strictly after `after` with the row's times, frequency and zone. A digest
    already sent for a (local date, time) is never sent again (the scheduler's ledger), so a zone
    change cannot repeat one."""
    return next_digest(
        times=row.notification_times,
        frequency=row.notification_frequency,
        weekday=row.notification_weekday,
        zone=ZoneInfo(row.timezone),
        after=after,
    )


def after_served(row: UserSettings, served: Occurrence) -> Occurrence | None:
    """The digest after one just served (the dispatcher's catch-up): computed from it, not from
    now, so that none in between is skipped."""
    return following(row, served.at)


def set_next(row: UserSettings, occurrence: Occurrence | None) -> None:
    row.next_digest_at = occurrence.at if occurrence else None
    row.next_digest_date = occurrence.day if occurrence else None
    row.next_digest_time = occurrence.time if occurrence else None


def schedule_digest(row: UserSettings, now: datetime) -> None:
    """Recompute the next digest after an edit (times, frequency, weekday, zone): the first one
    after `now`. A digest already due (its instant <= now) and not yet served stays pending while
    digests are on: the dispatcher serves it at its next tick (or records it late) and moves on
    from it with the new settings; recomputing from `now` would lose it (and, during an outage,
    every digest since). Turning digests off drops it."""
    due = pending(row)
    if (
        due is not None
        and due.at <= now
        and row.notification_frequency != "off"
        and row.notification_times
    ):
        return
    set_next(row, following(row, now))
