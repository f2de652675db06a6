"""What happens to goals, for other domains to act on (see `goaltrack.subscriptions`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class GoalCompleted:
    """The goal's last open stage was completed."""

    user_id: uuid.UUID
    goal_id: uuid.UUID
    now: datetime
