"""The shapes of `GET /sync`, for the OpenAPI document and generated clients (the route renders
rows straight into JSON, as the hot reads do)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from goaltrack.account.schemas import SettingsOut
from goaltrack.achievements.schemas import AchievementOut
from goaltrack.goals.schemas import GoalOut
from goaltrack.notifications.schemas import NotificationOut


class GoalUpsert(BaseModel):
    type: Literal["goal"]
    id: uuid.UUID
    op: Literal["upsert"]
    data: GoalOut


class GoalDelete(BaseModel):
    type: Literal["goal"]
    id: uuid.UUID
    op: Literal["delete"]


class SettingsUpsert(BaseModel):
    type: Literal["settings"]
    id: None
    op: Literal["upsert"]
    data: SettingsOut


class NotificationUpsert(BaseModel):
    type: Literal["notification"]
    id: uuid.UUID
    op: Literal["upsert"]
    data: NotificationOut


class NotificationDelete(BaseModel):
    type: Literal["notification"]
    id: uuid.UUID
    op: Literal["delete"]


class AchievementUpsert(BaseModel):
    type: Literal["achievement"]
    id: str = Field(description="The achievement's code.")
    op: Literal["upsert"]
    data: AchievementOut


Change = Annotated[
    GoalUpsert
    | GoalDelete
    | SettingsUpsert
    | NotificationUpsert
    | NotificationDelete
    | AchievementUpsert,
    Field(description="One object in its latest state, or its deletion (a tombstone)."),
]


class SyncPage(BaseModel):
    changes: list[Change]
    cursor: str = Field(description="Opaque; pass it to the next GET /sync.")
    has_more: bool = Field(description="More changes wait: call again with `cursor` at once.")
