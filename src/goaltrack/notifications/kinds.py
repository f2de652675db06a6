"""The kinds of notification and the data each carries: one model per kind, so a writer cannot
forget a field the app (and the push's `data`) relies on."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

NotificationType = Literal[
    "reminder",
    "digest",
    "achievement",
    "goal_completed",
    "ai_stages_ready",
    "ai_failed",
    "export_ready",
]


class NotificationData(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: ClassVar[NotificationType]
    # Reminders are what a push is for; the rest can wait for the phone's next convenient moment.
    urgent: ClassVar[bool] = False


class ReminderData(NotificationData):
    type = "reminder"
    urgent = True
    goal_id: uuid.UUID
    stage_id: uuid.UUID | None = Field(description="The stage the reminder is about, if any.")
    reminder_id: uuid.UUID


class DigestData(NotificationData):
    type = "digest"
    active_goals: int = Field(description="How many goals are in progress.")


class GoalCompletedData(NotificationData):
    type = "goal_completed"
    goal_id: uuid.UUID


class AchievementData(NotificationData):
    type = "achievement"
    achievement_code: str = Field(description="The achievement's `code` in GET /achievements.")


class AiStagesReadyData(NotificationData):
    type = "ai_stages_ready"
    goal_id: uuid.UUID


class AiFailedData(NotificationData):
    type = "ai_failed"
    goal_id: uuid.UUID
    reason: str = Field(description="Why, in English (the goal's `ai_error`).")


class ExportReadyData(NotificationData):
    type = "export_ready"
    export_id: uuid.UUID
    url: str = Field(
        description="Its path on this API: GET with the access token, which redirects to a "
        "short-lived download link."
    )
    expires_at: datetime
