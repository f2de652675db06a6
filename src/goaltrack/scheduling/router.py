"""A goal's reminders: `/goals/{goal_id}/reminders` (documented under the goals tag)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response, status

from goaltrack.auth.caller import get_access_claims
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import SettingsDep
from goaltrack.errors import NotFound, error_responses
from goaltrack.goals.dependencies import OwnedGoal, ReadableGoal, goal_version
from goaltrack.goals.errors import NotAHabit
from goaltrack.goals.schemas import Reminder, ReminderIn, ReminderUpdate
from goaltrack.pagination import ListPage
from goaltrack.scheduling import reminders
from goaltrack.scheduling.errors import ReminderLimit

router = APIRouter(
    prefix="/goals",
    tags=["goals"],
    dependencies=[Depends(get_access_claims)],
    route_class=IdempotentRoute,
)

NO_CONTENT = status.HTTP_204_NO_CONTENT
NOT_FOUND = error_responses(NotFound)


@router.post(
    "/{goal_id:goal}/reminders",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(NotFound, ReminderLimit, NotAHabit),
)
async def add_reminder(
    body: ReminderIn,
    goal: OwnedGoal,
    session: SessionDep,
    settings: SettingsDep,
    now: Now,
    response: Response,
) -> Reminder:
    reminder = await reminders.add_reminder(session, settings, goal=goal, body=body, now=now)
    response.headers["ETag"] = await goal_version(session, goal)
    return Reminder.model_validate(reminder)


@router.get("/{goal_id:goal}/reminders", responses=NOT_FOUND)
async def list_reminders(goal: ReadableGoal, session: SessionDep) -> ListPage[Reminder]:
    """All of the goal's reminders by time of day, in one page (`next_cursor` is always null):
    a goal holds a bounded number of them (`reminder_limit` beyond)."""
    items = [Reminder.model_validate(r) for r in await reminders.list_reminders(session, goal=goal)]
    return ListPage(items=items, next_cursor=None)


@router.put(
    "/{goal_id:goal}/reminders/{reminder_id}", responses=error_responses(NotFound, NotAHabit)
)
async def update_reminder(
    reminder_id: uuid.UUID,
    body: ReminderUpdate,
    goal: OwnedGoal,
    session: SessionDep,
    now: Now,
    response: Response,
) -> Reminder:
    reminder = await reminders.update_reminder(
        session, goal=goal, reminder_id=reminder_id, body=body, now=now
    )
    response.headers["ETag"] = await goal_version(session, goal)
    return Reminder.model_validate(reminder)


@router.delete(
    "/{goal_id:goal}/reminders/{reminder_id}", status_code=NO_CONTENT, responses=NOT_FOUND
)
async def delete_reminder(reminder_id: uuid.UUID, goal: OwnedGoal, session: SessionDep) -> Response:
    await reminders.delete_reminder(session, goal=goal, reminder_id=reminder_id)
    return Response(status_code=NO_CONTENT)
