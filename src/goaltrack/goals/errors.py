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
