"""What goals' changes mean for their reminders (installed by `goaltrack.subscriptions`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from goaltrack.goals.events import GoalCreated, GoalStatusChanged
from goaltrack.goals.models import Goal
from goaltrack.scheduling import reminders


async def on_goal_created(session: AsyncSession, event: GoalCreated) -> None:
    if event.reminder is not None:
        goal = await session.get_one(Goal, event.goal_id)
        await reminders.create_reminder(session, goal=goal, body=event.reminder, now=event.now)


async def on_goal_status_changed(session: AsyncSession, event: GoalStatusChanged) -> None:
    # The goal row may have been changed by a statement (a stage toggle), not through the ORM.
    goal = await session.get_one(Goal, event.goal_id, populate_existing=True)
    await reminders.reschedule_goal(session, goal=goal, now=event.now)
