"""The change log: one row per synced object (a goal with its stages, attachments and reminders;
settings; a notification; an earned achievement) holding its latest version.

PostgreSQL writes it, from triggers on the synced tables (migration 0011): every path that writes
such a row (a request, the AI worker, the scheduler, an account deletion, a fix in psql) records
the change, and a new write path cannot forget to. A row's `seq` changes once per transaction
that changes the object, so it is the object's version: the ETag of its representation, and
what `If-Match` compares. `GET /sync` reads the same rows in (xid, seq) order (goaltrack.sync).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    and_,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.selectable import ScalarSelect
from starlette.responses import Response

from goaltrack.db import Base
from goaltrack.errors import AppError


class SyncChange(Base):
    __tablename__ = "sync_changes"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    # The goal's, notification's or achievement's id; the user's own id for settings.
    object_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    deleted: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    # The writing transaction's id (pg_current_xact_id: 64 bits, never wraps around).
    xid: Mapped[int] = mapped_column(BigInteger)
    # From sync_changes_seq, taken once per transaction that changes the object.
    seq: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("kind IN ('goal', 'settings', 'notification', 'achievement')", name="kind"),
        # GET /sync: WHERE user_id = ? AND (xid, seq) > cursor AND xid < horizon ORDER BY xid, seq
        Index("ix_sync_changes_user_id_xid_seq", "user_id", "xid", "seq"),
        # A goal list's version: max(seq) WHERE user_id = ? AND kind = 'goal'
        Index("ix_sync_changes_user_id_kind_seq", "user_id", "kind", "seq"),
        # Tombstone retention: WHERE deleted AND changed_at < ?
        Index("ix_sync_changes_tombstones", "changed_at", postgresql_where=text("deleted")),
    )


def version_of(kind: str, user_id: Any, object_id: Any) -> ScalarSelect[int]:
    """The object's current version, as a scalar subquery (NULL before its first change)."""
    return (
        select(SyncChange.seq)
        .where(
            and_(
                SyncChange.user_id == user_id,
                SyncChange.kind == kind,
                SyncChange.object_id == object_id,
            )
        )
        .scalar_subquery()
    )


# The newest version among a user's goals, tombstones included (a deletion changes every list).
# Retention never collects a user's newest row (goaltrack.sync), so this never goes back.
GOALS_VERSION = (
    select(func.max(SyncChange.seq))
    .where(SyncChange.user_id == bindparam("user_id"), SyncChange.kind == "goal")
    .scalar_subquery()
)


# --- conditional requests (RFC 9110, section 13) ------------------------------------------------


class PreconditionFailed(AppError):
    status_code = 412
    code = "precondition_failed"
    detail = "The resource changed since the ETag in If-Match was read; read it again."


class PreconditionRequired(AppError):
    status_code = 428
    code = "precondition_required"
    detail = "This server requires If-Match on writes to goals and settings: send the ETag read."


def is_conditional(request: Request) -> bool:
    """Whether a write to a goal or settings is compared with the current version: it carries
    `If-Match`; without one, 428 when the server requires it (REQUIRE_IF_MATCH, for a fleet whose
    clients all send it), else the last write wins."""
    if "if-match" in request.headers:
        return True
    if request.app.state.settings.require_if_match:
        raise PreconditionRequired
    return False


def etag(version: int | str | None) -> str:
    """A strong entity tag for a version. It names the data, not its bytes on the wire: the same
    for a gzip-compressed response (as GitHub's and S3's)."""
    return f'"{version if version is not None else 0}"'


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def none_match(request: Request, current: str) -> bool:
    """`If-None-Match` names the current ETag (weak comparison; `*` matches): answer 304."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = _tags(header)
    return "*" in tags or any(tag.removeprefix("W/") == current for tag in tags)


def _data_version(tag: str) -> str:
    # `"<version>"`, or `"<version>.<local date>"` for a habit, whose figures also move with
    # the date: a write is compared on the data alone, so yesterday's read is no conflict.
    return tag.strip('"').partition(".")[0]


def require_match(request: Request, current: str | None) -> None:
    """`If-Match` (strong comparison of the data's version; `*` matches any current
    representation), else 412. `current` None: the resource does not exist."""
    header = request.headers.get("if-match")
    if header is None:
        return
    tags = _tags(header)
    if current is not None and (
        "*" in tags
        or any(
            not tag.startswith("W/") and _data_version(tag) == _data_version(current)
            for tag in tags
        )
    ):
        return
    raise PreconditionFailed


def revalidated(current: str) -> dict[str, str]:
    """A cacheable read's headers: its ETag, and that a client (never a shared cache: the
    response is the caller's) may keep it but must ask again, with `If-None-Match`, each time."""
    return {"ETag": current, "Cache-Control": "private, no-cache"}


def not_modified(current: str) -> Response:
    return Response(status_code=304, headers=revalidated(current))


async def current_version(
    session: AsyncSession, kind: str, user_id: uuid.UUID, object_id: uuid.UUID
) -> str:
    """The object's ETag inside the current transaction (after its writes: they are flushed)."""
    await session.flush()
    version = await session.scalar(select(version_of(kind, user_id, object_id)))
    return etag(version)
