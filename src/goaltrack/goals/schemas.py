from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from goaltrack.schemas import (
    ClockTime,
    IsoDate,
    RequestModel,
    ResponseModel,
    StrictInt,
    has_visible_character,
)


def reject_null(*fields: str) -> Callable[[Any], Any]:
    """For partial updates: these fields may be left out, but not set to null."""

    def check(model: Any) -> Any:
        for field in fields:
            if field in model.model_fields_set and getattr(model, field) is None:
                raise ValueError(f"{field} cannot be null")
        return model

    return check


def _not_blank(value: str) -> str:
    """At least one visible character (goaltrack.schemas.INVISIBLE_RANGES, which the OpenAPI
    document states too); the title is stored exactly as given."""
    if not has_visible_character(value):
        raise ValueError("must not be blank")
    return value


Title = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
Description = Annotated[str, Field(max_length=5000)]
FrequencyDays = Annotated[StrictInt, Field(ge=1, le=3)]
AiStatus = Literal["idle", "pending", "done", "failed"]


GoalKind = Literal["goal", "habit"]
Weekday = Annotated[StrictInt, Field(ge=0, le=6, description="0 = Monday.")]


class DailySchedule(RequestModel):
    type: Literal["daily"]


class WeekdaysSchedule(RequestModel):
    type: Literal["weekdays"]
    days: Annotated[
        list[Weekday], Field(min_length=1, max_length=7, json_schema_extra={"uniqueItems": True})
    ]

    @model_validator(mode="after")
    def _distinct_and_sorted(self) -> WeekdaysSchedule:
        if len(set(self.days)) != len(self.days):
            raise ValueError("days must be distinct")
        self.days.sort()
        return self


class TimesPerWeekSchedule(RequestModel):
    type: Literal["times_per_week"]
    count: Annotated[StrictInt, Field(ge=1, le=7)]


class EveryNDaysSchedule(RequestModel):
    type: Literal["every_n_days"]
    n: Annotated[StrictInt, Field(ge=2, le=30, description="Counted from the creation date.")]


HabitSchedule = Annotated[
    DailySchedule | WeekdaysSchedule | TimesPerWeekSchedule | EveryNDaysSchedule,
    Field(discriminator="type"),
]


class ReminderIn(RequestModel):
    remind_time: ClockTime
    frequency_days: FrequencyDays


class ReminderUpdate(RequestModel):
    remind_time: ClockTime | None = None
    frequency_days: FrequencyDays | None = None

    _not_null = model_validator(mode="after")(reject_null("remind_time", "frequency_days"))


class GoalCreate(RequestModel):
    title: Title
    description: Description | None = None
    deadline: IsoDate | None = None
    reminder: ReminderIn | None = None
    kind: GoalKind = "goal"
    schedule: HabitSchedule | None = Field(
        default=None, description="Required for a habit; not allowed for a goal."
    )

    @model_validator(mode="after")
    def _habits_have_a_schedule(self) -> GoalCreate:
        if (self.kind == "habit") != (self.schedule is not None):
            raise ValueError("a habit needs a schedule, and only a habit has one")
        return self


class GoalUpdate(RequestModel):
    """Fields left out stay as they are; `null` clears a description or deadline."""

    title: Title | None = None
    description: Description | None = None
    deadline: IsoDate | None = None

    _title_not_null = model_validator(mode="after")(reject_null("title"))


class StageCreate(RequestModel):
    title: Title
    description: Description | None = None


class StageUpdate(RequestModel):
    title: Title | None = None
    description: Description | None = None

    _title_not_null = model_validator(mode="after")(reject_null("title"))


class StageOrder(RequestModel):
    stage_ids: Annotated[list[uuid.UUID], Field(min_length=1, max_length=1000)]


class Stage(ResponseModel):
    id: uuid.UUID
    title: str
    description: str | None
    position: int
    is_completed: bool
    completed_at: datetime | None


class Attachment(ResponseModel):
    id: uuid.UUID
    file_name: str
    file_type: str
    size: int
    url: str = Field(description="A presigned download URL; short-lived, new at every read.")
    content_url: str = Field(
        description="A stable path (bearer auth) that redirects (302) to a fresh presigned URL: "
        "what an image cache keys on."
    )
    created_at: datetime


class Reminder(ResponseModel):
    id: uuid.UUID
    remind_time: ClockTime
    frequency_days: int
    next_fire_at: datetime | None


class Streak(ResponseModel):
    current: int = Field(description="Consecutive due periods done, up to today's.")
    longest: int


class GoalSummary(ResponseModel):
    id: uuid.UUID
    title: str
    description: str | None
    deadline: date | None
    progress: int
    is_archived: bool
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    stage_count: int
    completed_stage_count: int
    ai_status: AiStatus
    kind: GoalKind
    # A habit's figures, in the user's zone as of the response (null for a goal).
    schedule: HabitSchedule | None
    streak: Streak | None
    due_today: bool | None
    done_today: bool | None
    completion_rate_30d: Annotated[int, Field(ge=0, le=100)] | None


class GoalOut(GoalSummary):
    stages: list[Stage]
    attachments: list[Attachment]
    reminders: list[Reminder]
    ai_error: str | None


class CheckinCreate(RequestModel):
    date: IsoDate | None = Field(
        default=None,
        description="The local date checked in (default: today in the user's zone); up to "
        "HABIT_BACKFILL_DAYS back, never ahead.",
    )
    note: Annotated[str, Field(max_length=500)] | None = None


class Checkin(ResponseModel):
    date: date
    note: str | None
    created_at: datetime


class CheckinList(ResponseModel):
    items: list[Checkin]
