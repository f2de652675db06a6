from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class DataExport(UUIDPrimaryKey, CreatedAt, Base):
    """A GDPR export: a ZIP of everything the user owns, kept in S3 for a week."""

    __tablename__ = "data_exports"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(
        String(16), default="pending", server_default=text("'pending'")
    )
    object_key: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'ready', 'failed')", name="status"),
        # One export at a time: a second pending row for the user violates this.
        Index(
            "uq_data_exports_user_id_pending",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'pending'"),
        ),
        # The expiry job: WHERE expires_at <= now()
        Index(
            "ix_data_exports_expires_at",
            "expires_at",
            postgresql_where=text("expires_at IS NOT NULL"),
        ),
    )
