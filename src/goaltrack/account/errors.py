from __future__ import annotations

from goaltrack.auth.errors import RestoreExpired as RestoreExpired  # also Sign in with Apple's
from goaltrack.errors import AppError


class ExportInProgress(AppError):
    status_code = 409
    code = "export_in_progress"
    detail = "An export is already being prepared."


class ExportExpired(AppError):
    status_code = 410
    code = "export_expired"
    detail = "This export has expired; ask for a new one."
