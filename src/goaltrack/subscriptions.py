"""Who handles which domain event: one table, installed by the API and the worker alike (a goal
completed by a background task must have the same consequences as one completed in a request).
A new handler is one line here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from goaltrack import events
from goaltrack.achievements import handlers as achievements
from goaltrack.auth.events import AccountReclaimed, LoggedOut
from goaltrack.devices import handlers as devices
from goaltrack.goals.events import (
    AiPlanApplied,
    AttachmentAdded,
    GoalCompleted,
    GoalCreated,
    GoalStatusChanged,
    HabitCheckedIn,
    StageCompleted,
)
from goaltrack.notifications import handlers as notifications
from goaltrack.scheduling import handlers as scheduling

SUBSCRIPTIONS: Mapping[type[Any], Sequence[events.Handler]] = {
    GoalCreated: (scheduling.on_goal_created, achievements.on_goal_created),
    GoalStatusChanged: (scheduling.on_goal_status_changed,),
    StageCompleted: (achievements.on_stage_completed,),
    GoalCompleted: (notifications.on_goal_completed, achievements.on_goal_completed),
    AttachmentAdded: (achievements.on_attachment_added,),
    AiPlanApplied: (achievements.on_ai_plan_applied,),
    HabitCheckedIn: (achievements.on_habit_checked_in,),
    LoggedOut: (devices.on_logged_out,),
    AccountReclaimed: (devices.on_account_reclaimed,),
}


def install() -> None:
    events.install(SUBSCRIPTIONS)
