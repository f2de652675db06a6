"""Every model, imported in one place so Alembic sees the whole schema."""

from goaltrack.account.models import DataExport
from goaltrack.achievements.models import Achievement, UserAchievement, UserStats
from goaltrack.ai.models import AiRun
from goaltrack.auth.models import PasswordResetToken, RefreshToken, User
from goaltrack.changes import SyncChange
from goaltrack.db import Base
from goaltrack.devices.models import Device
from goaltrack.files.models import FileDeletion
from goaltrack.goals.models import Goal, GoalAttachment, GoalReminder, GoalStage, HabitCheckin
from goaltrack.idempotency import IdempotencyKey
from goaltrack.notifications.models import Notification, PushDelivery
from goaltrack.profile.models import UserSettings
from goaltrack.scheduling.models import ScheduledDelivery
from goaltrack.worker.outbox import OutboxTask

__all__ = [
    "Achievement",
    "AiRun",
    "Base",
    "DataExport",
    "Device",
    "FileDeletion",
    "Goal",
    "GoalAttachment",
    "GoalReminder",
    "GoalStage",
    "HabitCheckin",
    "IdempotencyKey",
    "Notification",
    "OutboxTask",
    "PasswordResetToken",
    "PushDelivery",
    "RefreshToken",
    "ScheduledDelivery",
    "SyncChange",
    "User",
    "UserAchievement",
    "UserSettings",
    "UserStats",
]
