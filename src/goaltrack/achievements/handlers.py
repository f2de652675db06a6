"""Domain events that can earn achievements (wired in `goaltrack.subscriptions`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.achievements.service import record
from goaltrack.goals.events import (
    AiPlanApplied,
    AttachmentAdded,
    GoalCompleted,
    GoalCreated,
    HabitCheckedIn,
    StageCompleted,
)
from goaltrack.goals.models import Goal
from goaltrack.profile.queries import get_zone


async def _count(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    now: datetime,
    counters: dict[str, int],
    metrics: tuple[str, ...],
) -> None:
    await record(session, user_id=user_id, counters=counters, metrics=metrics, now=now)


async def on_goal_created(session: AsyncSession, event: GoalCreated) -> None:
    await _count(
        session,
        user_id=event.user_id,
        now=event.now,
        counters={"goals_created": 1},
        metrics=("goals_created", "goals_in_progress"),
    )


async def on_stage_completed(session: AsyncSession, event: StageCompleted) -> None:
    if event.first_time:  # toggling a stage does not farm "N stages completed"
        await _count(
            session,
            user_id=event.user_id,
            now=event.now,
            counters={"stages_completed": 1},
            metrics=("stages_completed",),
        )


async def on_goal_completed(session: AsyncSession, event: GoalCompleted) -> None:
    if not event.first_time:
        return  # a goal reopened and completed again is still one goal
    zone = await get_zone(session, event.user_id)
    deadline = await session.scalar(select(Goal.deadline).where(Goal.id == event.goal_id))
    # "Before its deadline": completed on or before the deadline day, in the user's own zone.
    in_time = deadline is not None and event.now.astimezone(zone).date() <= deadline
    await _count(
        session,
        user_id=event.user_id,
        now=event.now,
        counters={"goals_completed": 1, "goals_completed_before_deadline": int(in_time)},
        metrics=("goals_completed", "goals_completed_before_deadline"),
    )


async def on_attachment_added(session: AsyncSession, event: AttachmentAdded) -> None:
    await _count(
        session,
        user_id=event.user_id,
        now=event.now,
        counters={"attachments_added": 1},
        metrics=("attachments_added",),
    )


async def on_ai_plan_applied(session: AsyncSession, event: AiPlanApplied) -> None:
    await _count(
        session,
        user_id=event.user_id,
        now=event.now,
        counters={"ai_plans_applied": 1},
        metrics=("ai_plans_applied",),
    )


async def on_habit_checked_in(session: AsyncSession, event: HabitCheckedIn) -> None:
    """A streak achievement is earned by the check-in that makes the run long enough, a
    backfilled one too (the run counts the habit's whole history)."""
    await _count(
        session,
        user_id=event.user_id,
        now=event.now,
        counters={"habit_checkins": 1},
        metrics=("longest_habit_streak",),
    )
