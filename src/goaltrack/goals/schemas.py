from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictBool, model_validator

from goaltrack.schemas import (
    ClockTime,
    IsoDate,
    RequestModel,
    ResponseModel,
    StrictInt,
    not_blank,
)


def reject_null(*fields: str) -> Callable[[Any], Any]:
    """For partial updates: these fields may be left out, but not set to null."""

    def check(model: Any) -> Any:
        for field in fields:
            if field in model.model_fields_set and getattr(model, field) is None:
                raise ValueError(f"{field} cannot be null")
        return model

    return check


Title = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(not_blank)]
Description = Annotated[str, Field(max_length=5000)]
FrequencyDays = Annotated[StrictInt, Field(ge=1, le=3)]
AiStatus = Literal["idle", "pending", "done", "failed"]


GoalKind = Literal["goal", "habit"]
Weekday = Annotated[StrictInt, Field(ge=0, le=6, description="0 = Monday.")]


class DailySchedule(RequestModel):
    type: Literal["daily"]


def _distinct_sorted(days: list[int]) -> list[int]:
    if len(set(days)) != len(days):
        raise ValueError("days must be distinct")
    return sorted(days)


Weekdays = Annotated[
    list[Weekday],
    Field(min_length=1, max_length=7, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct_sorted),
]


class WeekdaysSchedule(RequestModel):
    type: Literal["weekdays"]
    days: Weekdays


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


ONLY_IF_NOT_DONE = (
    "A habit's reminder fires on the habit's due days only and, when true (a habit's default), "
    "only while that day is not done yet. Not allowed (409 not_a_habit) on a plain goal."
)


def _one_rhythm(model: ReminderIn | ReminderUpdate) -> ReminderIn | ReminderUpdate:
    if model.frequency_days is not None and model.weekdays is not None:
        raise ValueError("give frequency_days or weekdays, not both")
    return model


class ReminderIn(RequestModel):
    """Every `frequency_days` days or on `weekdays`, not both; neither: every day."""

    remind_time: ClockTime
    frequency_days: FrequencyDays | None = None
    weekdays: Weekdays | None = None
    only_if_not_done: StrictBool | None = Field(default=None, description=ONLY_IF_NOT_DONE)

    _one_rhythm = model_validator(mode="after")(_one_rhythm)
    _not_null = model_validator(mode="after")(
        reject_null("frequency_days", "weekdays", "only_if_not_done")
    )

    @model_validator(mode="after")
    def _every_day_by_default(self) -> ReminderIn:
        if self.weekdays is None and self.frequency_days is None:
            self.frequency_days = 1
        return self


class ReminderUpdate(RequestModel):
    """Fields left out stay; a new `frequency_days` or `weekdays` replaces the rhythm."""

    remind_time: ClockTime | None = None
    frequency_days: FrequencyDays | None = None
    weekdays: Weekdays | None = None
    only_if_not_done: StrictBool | None = Field(default=None, description=ONLY_IF_NOT_DONE)

    _one_rhythm = model_validator(mode="after")(_one_rhythm)
    _not_null = model_validator(mode="after")(
        reject_null("remind_time", "frequency_days", "weekdays", "only_if_not_done")
    )


class StageCreate(RequestModel):
    title: Title
    description: Description | None = None


# The schema's bound; the configured MAX_STAGES_PER_GOAL (default as large) may be lower.
MAX_INITIAL_STAGES = 100


class GoalCreate(RequestModel):
    title: Title
    description: Description | None = None
    deadline: IsoDate | None = None
    reminder: ReminderIn | None = None
    stages: list[StageCreate] | None = Field(
        default=None,
        max_length=MAX_INITIAL_STAGES,
        description="The first stages, in order (the create screen's one request); at most "
        "MAX_STAGES_PER_GOAL (409 stage_limit).",
    )
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
    frequency_days: int | None = Field(description="Every 1-3 days; null when on `weekdays`.")
    weekdays: list[int] | None = Field(description="0 = Monday; null when every N days.")
    only_if_not_done: bool
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
