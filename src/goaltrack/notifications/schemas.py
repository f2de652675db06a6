from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from goaltrack.notifications.kinds import NotificationType
from goaltrack.schemas import RequestModel, ResponseModel, StrictInt

SNOOZE_MIN_MINUTES = 5
SNOOZE_MAX_MINUTES = 1440


class NotificationOut(ResponseModel):
    id: uuid.UUID
    type: NotificationType
    title: str
    body: str
    data: dict[str, Any]
    is_read: bool
    created_at: datetime


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
