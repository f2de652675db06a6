"""Goal reminders and digests that fire at the user's local wall-clock time, exactly once.

PostgreSQL holds what is due (`goal_reminders.next_fire_at`, `user_settings.next_digest_at`,
both indexed); beat only ticks. A tick claims due rows in batches with FOR UPDATE SKIP LOCKED (two
beats, four workers: each row goes to one of them), records each occurrence in the ledger
(`reminder_deliveries`, unique per reminder and local date, or per user, local date and time), and
writes the notification for each occurrence the ledger accepted. The claimed row then moves to its
next occurrence after *now*: a scheduler that was down catches each missed occurrence up once, and
one found later than REMINDER_MAX_LATENESS_MINUTES is skipped (served, not sent) and counted.
A tick's cost grows with the number of due rows, never with the number of users or reminders.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, delete, func, select, text
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.goals.models import Goal, GoalReminder, GoalStage
from goaltrack.i18n import t
from goaltrack.notifications.kinds import DigestData, ReminderData
from goaltrack.notifications.service import notify
from goaltrack.profile.models import UserSettings
from goaltrack.scheduling import reminders
from goaltrack.scheduling.digests import schedule_digest
from goaltrack.scheduling.models import ScheduledDelivery

logger = logging.getLogger(__name__)

BATCH = 500
RETENTION_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Served:
    claimed: int = 0
    sent: int = 0
    late: int = 0  # skipped: found later than the allowed lateness
    duplicate: int = 0  # already served (ledger): another dispatcher or an earlier zone
    empty: int = 0  # digests with nothing to say (no active goal)


def reminder_claim(now: datetime, batch: int = BATCH) -> Select[GoalReminder, Goal, str, str]:
    """The due reminders of one batch, each with its goal and its user's zone and locale, claimed
    (FOR UPDATE SKIP LOCKED: a second dispatcher takes the next rows) in `next_fire_at` order."""
    return (
        select(GoalReminder, Goal, UserSettings.timezone, UserSettings.locale)
        .join(Goal, Goal.id == GoalReminder.goal_id)
        .join(UserSettings, UserSettings.user_id == Goal.user_id)
        .where(GoalReminder.next_fire_at <= now)
        .order_by(GoalReminder.next_fire_at)
        .limit(batch)
        .with_for_update(of=GoalReminder, skip_locked=True)
    )


def digest_claim(now: datetime, batch: int = BATCH) -> Select[UserSettings]:
    """The due digests of one batch (their settings rows), claimed like the reminders."""
    return (
        select(UserSettings)
        .where(UserSettings.next_digest_at <= now)
        .order_by(UserSettings.next_digest_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )


async def dispatch_reminders(
    session: AsyncSession, *, now: datetime, max_lateness: timedelta, batch: int = BATCH
) -> Served:
    due = (await session.execute(reminder_claim(now, batch))).all()
    if not due:
        return Served()
    entries: list[dict[str, Any]] = []
    late = set()
    for reminder, goal, zone_name, _ in due:
        assert reminder.next_fire_at is not None
        is_late = now - reminder.next_fire_at > max_lateness
        if is_late:
            late.add(reminder.id)
        entries.append(
            {
                "id": uuid.uuid4(),
                "kind": "reminder",
                "reminder_id": reminder.id,
                "user_id": goal.user_id,
                "local_date": _due_date(reminder, ZoneInfo(zone_name)),
                "local_time": reminder.remind_time,
                "scheduled_for": reminder.next_fire_at,
                "notification_id": None if is_late else uuid.uuid4(),
                "sent_at": now,
            }
        )
    accepted = await _record(session, entries, ["reminder_id", "local_date"], "reminder")
    next_stages = await _first_open_stages(session, [goal.id for _, goal, _, _ in due])
    sent = 0
    for (reminder, goal, zone_name, locale), entry in zip(due, entries, strict=True):
        if entry["id"] in accepted and entry["notification_id"] is not None:
            stage_id, stage_title = next_stages.get(goal.id, (None, None))
            await notify(
                session,
                user_id=goal.user_id,
                data=ReminderData(goal_id=goal.id, stage_id=stage_id, reminder_id=reminder.id),
                title=t(locale, "reminder.title", goal=goal.title),
                body=(
                    t(locale, "reminder.body", stage=stage_title)
                    if stage_title
                    else t(locale, "reminder.body_no_stage")
                ),
                now=now,
                notification_id=entry["notification_id"],
            )
            sent += 1
        reminder.last_sent_date = entry["local_date"]
        reminders.schedule(
            goal, reminder, ZoneInfo(zone_name), now, not_on_or_before=entry["local_date"]
        )
    await session.flush()
    if late:
        logger.warning("scheduler: %d reminders found too late were skipped", len(late))
    return Served(
        claimed=len(due),
        sent=sent,
        late=len(late),
        duplicate=len(entries) - len(accepted),
    )


async def dispatch_digests(
    session: AsyncSession, *, now: datetime, max_lateness: timedelta, batch: int = BATCH
) -> Served:
    due = list(await session.scalars(digest_claim(now, batch)))
    if not due:
        return Served()
    today = {row.user_id: now.astimezone(ZoneInfo(row.timezone)).date() for row in due}
    summaries = await _active_goal_summaries(session, today)
    entries: list[dict[str, Any]] = []
    late = empty = 0
    for row in due:
        assert row.next_digest_at is not None
        local = row.next_digest_at.astimezone(ZoneInfo(row.timezone))
        summary = summaries.get(row.user_id)
        send = now - row.next_digest_at <= max_lateness and summary is not None
        late += now - row.next_digest_at > max_lateness
        empty += summary is None
        entries.append(
            {
                "id": uuid.uuid4(),
                "kind": "digest",
                "reminder_id": None,
                "user_id": row.user_id,
                "local_date": row.next_digest_date or local.date(),
                "local_time": row.next_digest_time or local.time().replace(tzinfo=None),
                "scheduled_for": row.next_digest_at,
                "notification_id": uuid.uuid4() if send else None,
                "sent_at": now,
            }
        )
    accepted = await _record(session, entries, ["user_id", "local_date", "local_time"], "digest")
    sent = 0
    for row, entry in zip(due, entries, strict=True):
        summary = summaries.get(row.user_id)
        if entry["id"] in accepted and entry["notification_id"] is not None and summary:
            await notify(
                session,
                user_id=row.user_id,
                data=DigestData(active_goals=summary.count),
                title=t(row.locale, "digest.title"),
                body=summary.text(row.locale),
                now=now,
                notification_id=entry["notification_id"],
            )
            sent += 1
        schedule_digest(row, now)
    await session.flush()
    return Served(
        claimed=len(due),
        sent=sent,
        late=late,
        duplicate=len(entries) - len(accepted),
        empty=empty,
    )


def _due_date(reminder: GoalReminder, zone: ZoneInfo) -> date:
    if reminder.next_fire_date is not None:
        return reminder.next_fire_date
    assert reminder.next_fire_at is not None
    return reminder.next_fire_at.astimezone(zone).date()


async def _record(
    session: AsyncSession, entries: list[dict[str, Any]], key: list[str], kind: str
) -> set[uuid.UUID]:
    """Insert the ledger rows; the ids of those that were not already there."""
    accepted = await session.scalars(
        insert(ScheduledDelivery)
        .values(entries)
        .on_conflict_do_nothing(index_elements=key, index_where=text(f"kind = '{kind}'"))
        .returning(ScheduledDelivery.id)
    )
    return set(accepted)


async def _first_open_stages(
    session: AsyncSession, goal_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, str]]:
    """Each goal's first stage not yet completed, in one query over the batch."""
    rows = await session.execute(
        select(GoalStage.goal_id, GoalStage.id, GoalStage.title)
        .where(GoalStage.goal_id.in_(goal_ids), GoalStage.is_completed.is_(False))
        .order_by(GoalStage.goal_id, GoalStage.position)
        .ext(distinct_on(GoalStage.goal_id))
    )
    return {goal_id: (stage_id, title) for goal_id, stage_id, title in rows}


@dataclass(frozen=True, slots=True)
class _Summary:
    count: int
    nearest_title: str | None
    nearest_deadline: date | None
    today: date

    def text(self, locale: str) -> str:
        body = (
            t(locale, "digest.body_one")
            if self.count == 1
            else t(locale, "digest.body", count=self.count)
        )
        if self.nearest_deadline is not None and self.nearest_title is not None:
            days = (self.nearest_deadline - self.today).days
            key = (
                "digest.due" if days > 0 else "digest.due_today" if days == 0 else "digest.overdue"
            )
            body += t(locale, key, goal=self.nearest_title, days=abs(days))
        return body


async def _active_goal_summaries(
    session: AsyncSession, today: dict[uuid.UUID, date]
) -> dict[uuid.UUID, _Summary]:
    """Per user of the batch (with their local date): active goals (not archived, not completed)
    and the one due soonest."""
    active = and_(
        Goal.user_id.in_(list(today)), Goal.is_archived.is_(False), Goal.completed_at.is_(None)
    )
    counted = await session.execute(
        select(Goal.user_id, func.count()).where(active).group_by(Goal.user_id)
    )
    counts: dict[uuid.UUID, int] = {row[0]: row[1] for row in counted}
    nearest = {
        user_id: (title, deadline)
        for user_id, title, deadline in await session.execute(
            select(Goal.user_id, Goal.title, Goal.deadline)
            .where(active, Goal.deadline.is_not(None))
            .order_by(Goal.user_id, Goal.deadline, Goal.created_at)
            .ext(distinct_on(Goal.user_id))
        )
    }
    return {
        user_id: _Summary(
            count=count,
            nearest_title=nearest.get(user_id, (None, None))[0],
            nearest_deadline=nearest.get(user_id, (None, None))[1],
            today=today[user_id],
        )
        for user_id, count in counts.items()
    }


async def delete_expired_deliveries(
    session: AsyncSession, *, now: datetime, retention: timedelta
) -> int:
    """One batch of ledger rows older than the retention period (ix_reminder_deliveries_sent_at)."""
    batch = (
        select(ScheduledDelivery.id)
        .where(ScheduledDelivery.sent_at < now - retention)
        .limit(RETENTION_BATCH)
        .scalar_subquery()
    )
    result = await session.execute(delete(ScheduledDelivery).where(ScheduledDelivery.id.in_(batch)))
    return int(result.rowcount)  # type: ignore[attr-defined]
