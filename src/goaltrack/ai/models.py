from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class AiRun(UUIDPrimaryKey, CreatedAt, Base):
    """One "split into stages with AI" request: its outcome, the daily quota's unit, and what
    the stale-run sweep looks at."""

    __tablename__ = "ai_runs"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    goal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("goals.id", ondelete="CASCADE"), index=True
    )
    max_stages: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'done', 'failed')", name="status"),
        # The daily quota: WHERE user_id = ? AND created_at > now() - 1 day
        Index("ix_ai_runs_user_id_created_at", "user_id", "created_at"),
        # The sweep: pending runs past their deadline.
        Index(
            "ix_ai_runs_pending_created_at",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )
