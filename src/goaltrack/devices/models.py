from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, func
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class Device(UUIDPrimaryKey, CreatedAt, Base):
    """An FCM registration token. A token belongs to one user at a time: the app on a shared
    phone registers it again after another person logs in, and it moves."""

    __tablename__ = "devices"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token: Mapped[str] = mapped_column(String(1024), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    last_seen_at: Mapped[datetime] = mapped_column(server_default=func.now())
