from __future__ import annotations

from goaltrack.errors import AppError


class NotSnoozable(AppError):
    status_code = 409
    code = "not_snoozable"
    detail = "Only a reminder of a goal still in progress can be snoozed."
