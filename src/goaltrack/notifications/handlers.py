"""Domain events that become notifications (wired in `goaltrack.subscriptions`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.goals.events import GoalCompleted
from goaltrack.goals.models import Goal
from goaltrack.i18n import t
from goaltrack.notifications.kinds import GoalCompletedData
from goaltrack.notifications.service import notify
from goaltrack.profile.queries import get_locale


async def on_goal_completed(session: AsyncSession, event: GoalCompleted) -> None:
    title = await session.scalar(select(Goal.title).where(Goal.id == event.goal_id))
    locale = await get_locale(session, event.user_id)
    await notify(
        session,
        user_id=event.user_id,
        data=GoalCompletedData(goal_id=event.goal_id),
        title=t(locale, "goal_completed.title"),
        body=t(locale, "goal_completed.body", goal=title or ""),
        now=event.now,
    )
