from __future__ import annotations

from goaltrack.errors import AppError


class InvalidSyncCursor(AppError):
    status_code = 400
    code = "invalid_cursor"
    detail = "The sync cursor does not parse; start again without one."


class SyncCursorExpired(AppError):
    status_code = 410
    code = "sync_cursor_expired"
    detail = "The sync cursor is older than the deletions kept; start again without one."
