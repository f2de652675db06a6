"""Who handles which domain event: one table, installed by the API and the worker alike (a goal
completed by a background task must have the same consequences as one completed in a request).
A new handler is one line here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from goaltrack import events
from goaltrack.goals.events import GoalCompleted
from goaltrack.notifications import handlers as notifications

SUBSCRIPTIONS: Mapping[type[Any], Sequence[events.Handler]] = {
    GoalCompleted: (notifications.on_goal_completed,),
}


def install() -> None:
    events.install(SUBSCRIPTIONS)
