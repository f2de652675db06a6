from __future__ import annotations

from goaltrack.errors import AppError


class RestoreExpired(AppError):
    status_code = 410
    code = "restore_expired"
    detail = "The grace period is over: this account has been or is being deleted for good."


class ExportInProgress(AppError):
    status_code = 409
    code = "export_in_progress"
    detail = "An export is already being prepared."


class ExportExpired(AppError):
    status_code = 410
    code = "export_expired"
    detail = "This export has expired; ask for a new one."
