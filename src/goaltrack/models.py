"""Every model, imported in one place so Alembic sees the whole schema."""

from goaltrack.account.models import UserSettings
from goaltrack.auth.models import PasswordResetToken, RefreshToken, User
from goaltrack.db import Base
from goaltrack.files.models import FileDeletion
from goaltrack.goals.models import Goal, GoalAttachment, GoalReminder, GoalStage

__all__ = [
    "Base",
    "FileDeletion",
    "Goal",
    "GoalAttachment",
    "GoalReminder",
    "GoalStage",
    "PasswordResetToken",
    "RefreshToken",
    "User",
    "UserSettings",
]
