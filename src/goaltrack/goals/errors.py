from __future__ import annotations

from goaltrack.errors import AppError


class StageLimit(AppError):
    status_code = 409
    code = "stage_limit"
    detail = "This goal has the maximum number of stages."


class AttachmentLimit(AppError):
    status_code = 409
    code = "attachment_limit"
    detail = "This goal has the maximum number of attachments."


class InvalidStageOrder(AppError):
    status_code = 422
    code = "invalid_stage_order"
    detail = "stage_ids must list every stage of the goal exactly once."
    location = ("body", "stage_ids")


class NotAHabit(AppError):
    status_code = 409
    code = "not_a_habit"
    detail = "Only a habit takes check-ins."


class AlreadyCheckedIn(AppError):
    status_code = 409
    code = "already_checked_in"
    detail = "This date is checked in already."


class CheckinDateOutOfRange(AppError):
    status_code = 422
    code = "checkin_date_out_of_range"
    detail = "A check-in is for today or up to HABIT_BACKFILL_DAYS back, never a future date."
    location = ("body", "date")


class CalendarRangeInvalid(AppError):
    status_code = 422
    code = "invalid_range"
    detail = "`from` must not be after `to`, and a call covers at most 366 days."
    location = ("query", "from")


class GoalQuota(AppError):
    status_code = 409
    code = "goal_quota"
    detail = "This account has the maximum number of goals (MAX_GOALS_PER_USER)."


class StorageQuota(AppError):
    status_code = 409
    code = "storage_quota"
    detail = "This file would take the account past its storage quota (MAX_STORED_BYTES_PER_USER)."
