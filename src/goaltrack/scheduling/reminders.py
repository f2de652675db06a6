"""Per-goal reminders: their rows and their next occurrence (`next_fire_at`, UTC).

The rows belong to the goal (`goals.models.GoalReminder`: shown in the goal's detail, deleted
with it); when they fire is decided here. The schedule lives in PostgreSQL; the dispatcher reads
`next_fire_at`. It is computed from the user's wall-clock time in their own zone, and recomputed
whenever the time, the frequency, the user's zone or the goal's state (completed, archived,
deadline) changes; an occurrence already due when the user's zone or the goal changes stays due
(see `schedule`), and the dispatcher goes on from each occurrence it serves (`after_served`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.goals.errors import NotAHabit
from goaltrack.goals.models import Goal, GoalReminder
from goaltrack.goals.queries import habit_today
from goaltrack.goals.schemas import ReminderIn, ReminderUpdate
from goaltrack.profile.queries import get_zone
from goaltrack.scheduling.errors import ReminderLimit
from goaltrack.scheduling.occurrences import Occurrence, next_reminder


def pending(reminder: GoalReminder, zone: ZoneInfo) -> Occurrence | None:
    """The occurrence the reminder waits for (`next_fire_at`), None when it has none."""
    if reminder.next_fire_at is None:
        return None
    day = reminder.next_fire_date or reminder.next_fire_at.astimezone(zone).date()
    return Occurrence(reminder.next_fire_at, day, reminder.remind_time)


def _takes_reminders(goal: Goal, day: date) -> bool:
    """A completed or archived goal takes none; a goal with a deadline none dated after it."""
    return (
        goal.completed_at is None
        and not goal.is_archived
        and (goal.deadline is None or day <= goal.deadline)
    )


def _next(goal: Goal, reminder: GoalReminder, zone: ZoneInfo, after: datetime) -> Occurrence | None:
    return next_reminder(
        anchor=reminder.anchor_date,
        remind_time=reminder.remind_time,
        frequency_days=reminder.frequency_days,
        weekdays=reminder.weekdays,
        zone=zone,
        after=after,
        deadline=goal.deadline,
    )


def following(
    goal: Goal, reminder: GoalReminder, zone: ZoneInfo, after: datetime, *, served: date | None
) -> Occurrence | None:
    """The first occurrence after `after` that the goal still takes, dated after `served` (a
    local date already served: after a zone change the next occurrence can fall on it)."""
    if goal.completed_at is not None or goal.is_archived:
        return None
    occurrence = _next(goal, reminder, zone, after)
    while occurrence is not None and served is not None and occurrence.day <= served:
        occurrence = _next(goal, reminder, zone, occurrence.at)
    return occurrence


def after_served(
    goal: Goal, reminder: GoalReminder, zone: ZoneInfo, served: Occurrence
) -> Occurrence | None:
    """The occurrence after one just served (the dispatcher's catch-up): computed from it, not
    from now, so that none in between is skipped."""
    return following(goal, reminder, zone, served.at, served=served.day)


def wanted(reminder: GoalReminder, habit: Mapping[str, Any] | None, day: date) -> bool:
    """Whether an occurrence due on the local `day` is sent. A plain goal's always is; a habit's
    only on the habit's due days, and (`only_if_not_done`) while that day is not done. Decided
    when it fires, from the habit's stored summary as the dispatcher's claim locked it: a check-in
    committed before the claim silences it, one made after it waits for the send."""
    figures = habit_today(habit, day)
    if figures is None:
        return True
    return figures.due_today and not (reminder.only_if_not_done and figures.done_today)


def set_next(reminder: GoalReminder, occurrence: Occurrence | None) -> None:
    reminder.next_fire_at = occurrence.at if occurrence else None
    reminder.next_fire_date = occurrence.day if occurrence else None


def schedule(
    goal: Goal,
    reminder: GoalReminder,
    zone: ZoneInfo,
    now: datetime,
    *,
    not_on_or_before: date | None = None,
    keep_due: bool = True,
) -> None:
    """Recompute the reminder's next occurrence after a change (the goal's state or deadline,
    the user's zone, the reminder's own time or rhythm): the first one after `now` the goal
    takes, on a local date after `not_on_or_before` (already served).

    An occurrence already due (its instant <= now) and not yet served stays pending: the
    dispatcher serves it at its next tick (or records it late) and goes on from it with the new
    settings. Recomputing from `now` would move it into the future and lose it (and, during an
    outage, every occurrence since). A goal that no longer takes it (completed, archived, a
    deadline now before its date) drops it; so does a new time or rhythm of the reminder itself
    (`keep_due=False`): the user replaced the definition it belonged to, and going on from it with
    the new one would walk the new rhythm through the past (one anchored today can have an
    occurrence earlier today, before the edit) and send an occurrence that never was due."""
    due = pending(reminder, zone)
    if keep_due and due is not None and due.at <= now and _takes_reminders(goal, due.day):
        return
    set_next(reminder, following(goal, reminder, zone, now, served=not_on_or_before))


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
        weekdays=body.weekdays,
        only_if_not_done=_only_if_not_done(goal, body.only_if_not_done),
        anchor_date=now.astimezone(zone).date(),
        created_at=now,
    )
    schedule(goal, reminder, zone, now)
    session.add(reminder)
    await session.flush()
    return reminder


def _only_if_not_done(goal: Goal, asked: bool | None) -> bool:
    """Default: yes for a habit. A plain goal has no day to be done: asking is an error."""
    if goal.kind != "habit":
        if asked:
            raise NotAHabit(detail="Only a habit's reminder can wait for the day not being done.")
        return False
    return True if asked is None else asked


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
    if body.only_if_not_done is not None:
        reminder.only_if_not_done = _only_if_not_done(goal, body.only_if_not_done)
    zone = await get_zone(session, goal.user_id)
    rhythm = (body.frequency_days, body.weekdays)
    if rhythm != (None, None) and rhythm != (reminder.frequency_days, reminder.weekdays):
        # A new rhythm starts today; a new time of day alone keeps the old rhythm's days.
        reminder.frequency_days = body.frequency_days
        reminder.weekdays = body.weekdays
        reminder.anchor_date = now.astimezone(zone).date()
    schedule(goal, reminder, zone, now, not_on_or_before=reminder.last_sent_date, keep_due=False)
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
