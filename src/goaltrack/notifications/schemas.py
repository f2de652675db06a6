from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from goaltrack.notifications.kinds import NotificationType
from goaltrack.schemas import ResponseModel


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
