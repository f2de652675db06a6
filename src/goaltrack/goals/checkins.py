"""A habit's check-ins: one per local date, made for today or backfilled a few days, undone; each
rewrites the habit's Summary (goals.habits) in the same transaction, so reads need no check-in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack import events
from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.goals import habits
from goaltrack.goals.errors import AlreadyCheckedIn, CheckinDateOutOfRange, NotAHabit
from goaltrack.goals.events import HabitCheckedIn
from goaltrack.goals.models import Goal, HabitCheckin
from goaltrack.goals.schemas import CheckinCreate
from goaltrack.profile.queries import get_zone

CALENDAR_MAX_DAYS = 366


async def local_today(session: AsyncSession, goal: Goal, now: datetime) -> date:
    return now.astimezone(await get_zone(session, goal.user_id)).date()


def _require_habit(goal: Goal) -> habits.Schedule:
    if goal.kind != "habit" or goal.schedule is None or goal.habit_start is None:
        raise NotAHabit
    return habits.schedule_of(goal.schedule, goal.habit_start.toordinal())


async def add_checkin(
    session: AsyncSession, settings: Settings, *, goal: Goal, body: CheckinCreate, now: datetime
) -> HabitCheckin:
    """`goal` is locked by the caller. The date is the user's local date now unless given: the
    day it belongs to is decided when it is made, and a later zone change never moves it."""
    schedule = _require_habit(goal)
    today = await local_today(session, goal, now)
    day = body.date or today
    earliest = max(
        today - timedelta(days=settings.habit_backfill_days), date.fromordinal(schedule.start)
    )
    if not earliest <= day <= today:
        raise CheckinDateOutOfRange
    checkin: HabitCheckin | None = await session.scalar(
        insert(HabitCheckin)
        .values(goal_id=goal.id, date=day, note=body.note, created_at=now)
        .on_conflict_do_nothing()
        .returning(HabitCheckin)
    )
    if checkin is None:
        raise AlreadyCheckedIn
    await _summarize(session, goal, schedule, now)
    await events.emit(session, HabitCheckedIn(user_id=goal.user_id, goal_id=goal.id, now=now))
    return checkin


async def remove_checkin(session: AsyncSession, *, goal: Goal, day: date, now: datetime) -> None:
    schedule = _require_habit(goal)
    removed = await session.scalar(
        delete(HabitCheckin)
        .where(HabitCheckin.goal_id == goal.id, HabitCheckin.date == day)
        .returning(HabitCheckin.date)
    )
    if removed is None:
        raise NotFound
    await _summarize(session, goal, schedule, now)


async def list_checkins(
    session: AsyncSession, *, goal: Goal, start: date, end: date
) -> Sequence[HabitCheckin]:
    _require_habit(goal)
    return (
        await session.scalars(
            select(HabitCheckin)
            .where(HabitCheckin.goal_id == goal.id, HabitCheckin.date.between(start, end))
            .order_by(HabitCheckin.date)
        )
    ).all()


async def _summarize(
    session: AsyncSession, goal: Goal, schedule: habits.Schedule, now: datetime
) -> None:
    """The habit's Summary from all its check-ins: a write reads its history (a few thousand
    dates at most) so that no read ever does."""
    dates = await session.scalars(select(HabitCheckin.date).where(HabitCheckin.goal_id == goal.id))
    summary = habits.summarize(schedule, (day.toordinal() for day in dates))
    goal.streak_run = summary.run
    goal.streak_run_end = habits.as_date(summary.run_end)
    goal.streak_longest = summary.longest
    goal.checkin_mask = habits.as_bigint(summary.mask)
    goal.checkin_mask_end = habits.as_date(summary.mask_end)
    goal.updated_at = now
    await session.flush()
