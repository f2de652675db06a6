from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from goaltrack.auth.schemas import Email, GivenPassword, NewPassword
from goaltrack.schemas import (
    ClockTime,
    Locale,
    RequestModel,
    ResponseModel,
    StrictFlag,
    StrictInt,
    TimeZoneName,
    has_visible_character,
)

Frequency = Literal["daily", "weekly", "off"]
MAX_NOTIFICATION_TIMES = 6


class AccountOut(ResponseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    display_name: str | None
    created_at: datetime


def _visible(value: str) -> str:
    if not has_visible_character(value):
        raise ValueError("must not be blank")
    return value


DisplayName = Annotated[str, Field(min_length=1, max_length=60), AfterValidator(_visible)]


class AccountUpdate(RequestModel):
    """Fields left out stay as they are; `display_name: null` removes the name."""

    display_name: DisplayName | None = None


class EmailChange(RequestModel):
    new_email: Email
    password: GivenPassword


class SettingsOut(ResponseModel):
    push_enabled: bool
    notification_frequency: Frequency
    notification_times: list[ClockTime]
    notification_weekday: int
    timezone: str
    locale: Locale


class SettingsUpdate(RequestModel):
    timezone: TimeZoneName | None = None
    locale: Locale | None = None


class PushToggle(RequestModel):
    push_enabled: StrictFlag


class NotificationSchedule(RequestModel):
    times: Annotated[list[ClockTime], Field(max_length=MAX_NOTIFICATION_TIMES)]
    frequency: Frequency
    weekday: Annotated[StrictInt, Field(ge=0, le=6)] | None = None

    @model_validator(mode="after")
    def _times_are_distinct_and_present(self) -> NotificationSchedule:
        if len(set(self.times)) != len(self.times):
            raise ValueError("times must be distinct")
        if self.frequency != "off" and not self.times:
            raise ValueError(
                f"times needs 1 to {MAX_NOTIFICATION_TIMES} values unless frequency is 'off'"
            )
        return self


class PasswordChange(RequestModel):
    current_password: GivenPassword
    new_password: NewPassword


class PasswordConfirmation(RequestModel):
    password: GivenPassword


class RestoreRequest(RequestModel):
    email: Email
    password: GivenPassword


class DeletionScheduled(BaseModel):
    restore_until: datetime


class ExportAccepted(BaseModel):
    status: Literal["pending"] = "pending"
    detail: str = "The export is being prepared; a notification will carry its download link."
