from __future__ import annotations

from goaltrack.auth.errors import RestoreExpired as RestoreExpired  # also Sign in with Apple's
from goaltrack.errors import AppError


class ExportInProgress(AppError):
    status_code = 409
    code = "export_in_progress"
    detail = "An export is already being prepared."
