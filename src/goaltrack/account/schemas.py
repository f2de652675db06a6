from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from goaltrack.auth.schemas import Email, GivenPassword, IdToken, NewPassword
from goaltrack.schemas import (
    ClockTime,
    Locale,
    RequestModel,
    ResponseModel,
    StrictFlag,
    StrictInt,
    TimeZoneName,
)

Frequency = Literal["daily", "weekly", "off"]
MAX_NOTIFICATION_TIMES = 6


class AccountOut(ResponseModel):
    id: uuid.UUID
    email: str
    created_at: datetime


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
    """The account's password or, for an account made by Sign in with Google/Apple (which has
    none until it sets one through reset), a fresh ID token of one of its sign-ins: one of the
    two, not null."""

    password: GivenPassword | None = None
    id_token: IdToken | None = None

    @model_validator(mode="after")
    def _one_of_the_two(self) -> PasswordConfirmation:
        given = [name for name in ("password", "id_token") if name in self.model_fields_set]
        if len(given) != 1 or getattr(self, given[0]) is None:
            raise ValueError("give the password or an id_token (one of them, not null)")
        return self


class RestoreRequest(RequestModel):
    email: Email
    password: GivenPassword


class DeletionScheduled(BaseModel):
    restore_until: datetime


class ExportAccepted(BaseModel):
    status: Literal["pending"] = "pending"
    detail: str = "The export is being prepared; a notification will carry its download link."
