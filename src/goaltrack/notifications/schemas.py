from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from goaltrack.notifications.kinds import (
    AchievementData,
    AiFailedData,
    AiStagesReadyData,
    DigestData,
    ExportReadyData,
    GoalCompletedData,
    NotificationData,
    NotificationType,
    ReminderData,
)
from goaltrack.schemas import RequestModel, ResponseModel, StrictInt

SNOOZE_MIN_MINUTES = 5
SNOOZE_MAX_MINUTES = 1440


class NotificationFields(ResponseModel):
    """What every notification has; `type` says which `data` it carries (one model per kind
    below, so a generated client narrows `data` by `type`)."""

    id: uuid.UUID
    type: NotificationType
    title: str
    body: str
    data: NotificationData
    is_read: bool
    created_at: datetime


class ReminderNotification(NotificationFields):
    type: Literal["reminder"]
    data: ReminderData


class DigestNotification(NotificationFields):
    type: Literal["digest"]
    data: DigestData


class AchievementNotification(NotificationFields):
    type: Literal["achievement"]
    data: AchievementData


class GoalCompletedNotification(NotificationFields):
    type: Literal["goal_completed"]
    data: GoalCompletedData


class AiStagesReadyNotification(NotificationFields):
    type: Literal["ai_stages_ready"]
    data: AiStagesReadyData


class AiFailedNotification(NotificationFields):
    type: Literal["ai_failed"]
    data: AiFailedData


class ExportReadyNotification(NotificationFields):
    type: Literal["export_ready"]
    data: ExportReadyData


NotificationOut = Annotated[
    ReminderNotification
    | DigestNotification
    | AchievementNotification
    | GoalCompletedNotification
    | AiStagesReadyNotification
    | AiFailedNotification
    | ExportReadyNotification,
    Field(discriminator="type"),
]
NOTIFICATION = TypeAdapter[NotificationOut](NotificationOut)


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None
    unread_count: int


class ReadAllResult(BaseModel):
    updated: int


class SnoozeRequest(RequestModel):
    minutes: Annotated[
        StrictInt,
        Field(
            ge=SNOOZE_MIN_MINUTES,
            le=SNOOZE_MAX_MINUTES,
            description="The reminder comes again once, this many minutes from now.",
        ),
    ]


class SnoozeAccepted(BaseModel):
    due_at: datetime = Field(
        description="When the reminder comes again (its push waits out quiet hours)."
    )
