from __future__ import annotations

from goaltrack.errors import AppError


class ReminderLimit(AppError):
    status_code = 409
    code = "reminder_limit"
    detail = "This goal has the maximum number of reminders."
