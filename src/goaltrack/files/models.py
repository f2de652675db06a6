from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class FileDeletion(UUIDPrimaryKey, CreatedAt, Base):
    """Outbox of S3 objects to delete. Rows are written in the same transaction that drops the
    database record (a trigger on goal_attachments does it, cascades included), so a crash or an
    S3 outage between the two loses nothing: the sweep retries until the object is gone."""

    __tablename__ = "file_deletions"

    object_key: Mapped[str] = mapped_column(String(1024))
    # A prefix (`{user_id}/`) removes every object under it: an account's files at hard delete.
    is_prefix: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # Not processed before this instant: upload intents wait until their request must be over,
    # failed attempts back off.
    not_before: Mapped[datetime] = mapped_column(server_default=func.now())
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))

    __table_args__ = (
        # The sweep: WHERE not_before <= now() ORDER BY not_before LIMIT n FOR UPDATE SKIP LOCKED
        Index("ix_file_deletions_not_before", "not_before"),
    )
