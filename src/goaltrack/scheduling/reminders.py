"""Per-goal reminders: their rows and their next occurrence (`next_fire_at`, UTC).

The rows belong to the goal (`goals.models.GoalReminder`: shown in the goal's detail, deleted
with it); when they fire is decided here. The schedule lives in PostgreSQL; the dispatcher reads
`next_fire_at`. It is computed from the user's wall-clock time in their own zone, and recomputed
whenever the time, the frequency, the user's zone or the goal's state (completed, archived,
deadline) changes.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.goals.models import Goal, GoalReminder
from goaltrack.goals.schemas import ReminderIn, ReminderUpdate
from goaltrack.profile.queries import get_zone
from goaltrack.scheduling.errors import ReminderLimit
from goaltrack.scheduling.occurrences import next_reminder


def schedule(
    goal: Goal,
    reminder: GoalReminder,
    zone: ZoneInfo,
    after: datetime,
    *,
    not_on_or_before: date | None = None,
) -> None:
    """Set the reminder's next occurrence after `after`: none for a completed or archived goal,
    none past its deadline, and none on a local date already served (`not_on_or_before`; after
    a zone change the next occurrence can fall on such a date)."""
    occurrence = None
    if goal.completed_at is None and not goal.is_archived:
        occurrence = next_reminder(
            anchor=reminder.anchor_date,
            remind_time=reminder.remind_time,
            frequency_days=reminder.frequency_days,
            zone=zone,
            after=after,
            deadline=goal.deadline,
        )
        while (
            occurrence is not None
            and not_on_or_before is not None
            and occurrence.day <= not_on_or_before
        ):
            occurrence = next_reminder(
                anchor=reminder.anchor_date,
                remind_time=reminder.remind_time,
                frequency_days=reminder.frequency_days,
                zone=zone,
                after=occurrence.at,
                deadline=goal.deadline,
            )
    reminder.next_fire_at = occurrence.at if occurrence else None
    reminder.next_fire_date = occurrence.day if occurrence else None


async def list_reminders(session: AsyncSession, *, goal: Goal) -> list[GoalReminder]:
    return list(
        await session.scalars(
            select(GoalReminder)
            .where(GoalReminder.goal_id == goal.id)
            .order_by(GoalReminder.remind_time, GoalReminder.id)
        )
    )


async def get_reminder(
    session: AsyncSession, *, goal: Goal, reminder_id: uuid.UUID
) -> GoalReminder:
    reminder = await session.scalar(
        select(GoalReminder).where(GoalReminder.id == reminder_id, GoalReminder.goal_id == goal.id)
    )
    if reminder is None:
        raise NotFound
    return reminder


async def add_reminder(
    session: AsyncSession, settings: Settings, *, goal: Goal, body: ReminderIn, now: datetime
) -> GoalReminder:
    count = await session.scalar(
        select(func.count()).select_from(GoalReminder).where(GoalReminder.goal_id == goal.id)
    )
    if (count or 0) >= settings.max_reminders_per_goal:
        raise ReminderLimit
    return await create_reminder(session, goal=goal, body=body, now=now)


async def create_reminder(
    session: AsyncSession, *, goal: Goal, body: ReminderIn, now: datetime
) -> GoalReminder:
    """A reminder, its rhythm starting today in the user's zone (no limit check: a new goal's
    first reminder, or `add_reminder` after its check)."""
    zone = await get_zone(session, goal.user_id)
    reminder = GoalReminder(
        id=uuid.uuid4(),
        goal_id=goal.id,
        remind_time=body.remind_time,
        frequency_days=body.frequency_days,
        anchor_date=now.astimezone(zone).date(),
        created_at=now,
    )
    schedule(goal, reminder, zone, now)
    session.add(reminder)
    await session.flush()
    return reminder


async def update_reminder(
    session: AsyncSession,
    *,
    goal: Goal,
    reminder_id: uuid.UUID,
    body: ReminderUpdate,
    now: datetime,
) -> GoalReminder:
    reminder = await get_reminder(session, goal=goal, reminder_id=reminder_id)
    if body.remind_time is not None:
        reminder.remind_time = body.remind_time
    zone = await get_zone(session, goal.user_id)
    if body.frequency_days is not None and body.frequency_days != reminder.frequency_days:
        # A new rhythm starts today; a new time of day alone keeps the old rhythm's days.
        reminder.frequency_days = body.frequency_days
        reminder.anchor_date = now.astimezone(zone).date()
    schedule(goal, reminder, zone, now, not_on_or_before=reminder.last_sent_date)
    await session.flush()
    return reminder


async def delete_reminder(session: AsyncSession, *, goal: Goal, reminder_id: uuid.UUID) -> None:
    await session.delete(await get_reminder(session, goal=goal, reminder_id=reminder_id))
    await session.flush()


async def reschedule_goal(session: AsyncSession, *, goal: Goal, now: datetime) -> None:
    zone = await get_zone(session, goal.user_id)
    for reminder in await list_reminders(session, goal=goal):
        schedule(goal, reminder, zone, now, not_on_or_before=reminder.last_sent_date)
    await session.flush()


async def reschedule_user(session: AsyncSession, *, user_id: uuid.UUID, now: datetime) -> None:
    """After a time-zone change: every reminder of the user, at the same wall-clock time there."""
    zone = await get_zone(session, user_id)
    rows = await session.execute(
        select(GoalReminder, Goal)
        .join(Goal, Goal.id == GoalReminder.goal_id)
        .where(Goal.user_id == user_id)
    )
    for reminder, goal in rows:
        schedule(goal, reminder, zone, now, not_on_or_before=reminder.last_sent_date)
    await session.flush()
