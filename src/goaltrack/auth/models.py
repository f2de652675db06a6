from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from goaltrack.db import Base, CreatedAt, UUIDPrimaryKey


class User(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "users"

    # Stored lower-cased by the service; the unique index on lower(email) guards every other writer.
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Bumped to invalidate every access token issued before (password change, reset, deletion).
    token_version: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    deleted_at: Mapped[datetime | None]
    # The address was proven the user's: a code or link sent to it came back.
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    display_name: Mapped[str | None] = mapped_column(String(60))

    __table_args__ = (
        Index("uq_users_email_lower", func.lower(email), unique=True),
        # The purge job: soft-deleted users whose grace period is over.
        Index("ix_users_deleted_at", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )


class RefreshToken(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "refresh_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    # Every token rotated from one login shares the family; a replay revokes the whole family.
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    replaced_by: Mapped[uuid.UUID | None]
    user_agent: Mapped[str | None] = mapped_column(String(512))

    __table_args__ = (
        # Is the access token's session live? WHERE family_id = ? AND revoked_at IS NULL
        Index(
            "ix_refresh_tokens_family_id_live",
            "family_id",
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )


class PasswordResetToken(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "password_reset_tokens"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class EmailVerification(UUIDPrimaryKey, CreatedAt, Base):
    """A link and a 6-digit code sent to `email`: the user's own address (registration) or the
    one they asked to change to. Neither is stored: both derive from the row's id with the
    server's key (`auth.verification.secrets_of`), only the link token's hash is kept for its
    lookup. One live row per user: a new one ends the older ones."""

    __tablename__ = "email_verifications"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    email: Mapped[str] = mapped_column(String(320))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # Wrong codes tried against this row: at MAX_CODE_ATTEMPTS it is used up.
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
