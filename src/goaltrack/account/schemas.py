from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, model_validator

from goaltrack.auth.schemas import Email, GivenPassword, IdToken, NewPassword
from goaltrack.goals.schemas import reject_null
from goaltrack.schemas import (
    ClockTime,
    Locale,
    RequestModel,
    ResponseModel,
    StrictFlag,
    StrictInt,
    TimeZoneName,
    not_blank,
)

Frequency = Literal["daily", "weekly", "off"]
MAX_NOTIFICATION_TIMES = 6


class AccountOut(ResponseModel):
    id: uuid.UUID
    email: str
    email_verified: bool
    display_name: str | None
    created_at: datetime


DisplayName = Annotated[str, Field(min_length=1, max_length=60), AfterValidator(not_blank)]


class AccountUpdate(RequestModel):
    """Fields left out stay as they are; `display_name: null` removes the name."""

    display_name: DisplayName | None = None


class EmailChange(RequestModel):
    new_email: Email
    password: GivenPassword


class QuietHours(RequestModel):
    """A daily window of the user's wall-clock time (`timezone`) in which pushes wait for its end
    (the feed row is written at once). `end` before `start` wraps midnight (22:00-07:00); `start`
    and `end` differ."""

    start: Annotated[ClockTime, Field(examples=["22:00"])]
    end: Annotated[ClockTime, Field(examples=["07:00"])]

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class SettingsOut(ResponseModel):
    push_enabled: bool
    notification_frequency: Frequency
    notification_times: list[ClockTime]
    notification_weekday: int
    timezone: str
    locale: Locale
    quiet_hours: QuietHours | None

    @model_validator(mode="before")
    @classmethod
    def _quiet_hours_from_columns(cls, row: Any) -> Any:
        """The settings row (an ORM object or a driver record) keeps quiet hours as two columns."""
        if isinstance(row, cls) or (isinstance(row, Mapping) and "quiet_hours" in row):
            return row  # already in this shape
        value = row.get if isinstance(row, Mapping) else partial(getattr, row)
        start, end = value("quiet_hours_start"), value("quiet_hours_end")
        shown = {name: value(name) for name in cls.model_fields if name != "quiet_hours"}
        quiet = None if start is None or end is None else {"start": start, "end": end}
        return {**shown, "quiet_hours": quiet}


class SettingsUpdate(RequestModel):
    timezone: TimeZoneName | None = None
    locale: Locale | None = None
    quiet_hours: QuietHours | None = Field(default=None, description="null clears them.")


class PushToggle(RequestModel):
    """Push on or off, quiet hours set or cleared (null): at least one of the two; a client that
    sends `push_enabled` alone is served as before. (The name predates `quiet_hours`: generated
    clients know it.)"""

    push_enabled: StrictFlag | None = None
    quiet_hours: QuietHours | None = Field(default=None, description="null clears them.")

    _not_null = model_validator(mode="after")(reject_null("push_enabled"))

    @model_validator(mode="after")
    def _says_something(self) -> PushToggle:
        if not self.model_fields_set:
            raise ValueError("give push_enabled, quiet_hours or both")
        return self


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
