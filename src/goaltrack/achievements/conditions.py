"""The metrics achievements are earned on. A catalogue row says `condition = <metric name>`,
`threshold = N`; the achievement is earned when the metric reaches N. A new kind of achievement
is a migration adding its row, plus (if no metric fits) one function here."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.goals.models import Goal

# A metric reads the user's counters (a `user_stats` row, as a mapping) or counts for itself.
Metric = Callable[[AsyncSession, uuid.UUID, Mapping[str, Any]], Awaitable[int]]


def _counter(name: str) -> Metric:
    async def read(session: AsyncSession, user_id: uuid.UUID, stats: Mapping[str, Any]) -> int:
        value: int = stats[name]
        return value

    return read


async def goals_in_progress(
    session: AsyncSession, user_id: uuid.UUID, stats: Mapping[str, Any]
) -> int:
    """Active goals now: an index range over the user's unarchived goals (their own count)."""
    count = await session.scalar(
        select(func.count())
        .select_from(Goal)
        .where(Goal.user_id == user_id, Goal.is_archived.is_(False), Goal.completed_at.is_(None))
    )
    return int(count or 0)


async def longest_habit_streak(
    session: AsyncSession, user_id: uuid.UUID, stats: Mapping[str, Any]
) -> int:
    """The longest run of any of the user's habits (kept on each habit's row by its check-ins;
    ix_goals_user_id_habits: the user's habits only)."""
    longest = await session.scalar(
        select(func.max(Goal.streak_longest)).where(Goal.user_id == user_id, Goal.kind == "habit")
    )
    return int(longest or 0)


METRICS: dict[str, Metric] = {
    "goals_created": _counter("goals_created"),
    "stages_completed": _counter("stages_completed"),
    "goals_completed": _counter("goals_completed"),
    "goals_completed_before_deadline": _counter("goals_completed_before_deadline"),
    "attachments_added": _counter("attachments_added"),
    "ai_plans_applied": _counter("ai_plans_applied"),
    "goals_in_progress": goals_in_progress,
    "habit_checkins": _counter("habit_checkins"),
    "longest_habit_streak": longest_habit_streak,
}
