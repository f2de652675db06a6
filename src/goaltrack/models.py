"""Every model, imported in one place so Alembic sees the whole schema."""

from goaltrack.account.models import UserSettings
from goaltrack.auth.models import PasswordResetToken, RefreshToken, User
from goaltrack.db import Base

__all__ = ["Base", "PasswordResetToken", "RefreshToken", "User", "UserSettings"]
