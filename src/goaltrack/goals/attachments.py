"""Attachments: the file in S3, the row in PostgreSQL, and never one without the other for long.

Upload order: an intent row is committed first (outbox), the object is stored, then the attachment
row is inserted and the intent removed in the request's transaction. Whatever fails in between,
the intent's sweep removes the object. Deletion goes the other way: the row goes (a trigger queues
the object key in the same transaction) and the object follows from the outbox.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack import events
from goaltrack.config import Settings
from goaltrack.errors import NotFound
from goaltrack.files import service as files
from goaltrack.goals.errors import AttachmentLimit, StorageQuota
from goaltrack.goals.events import AttachmentAdded
from goaltrack.goals.models import Goal, GoalAttachment, UserUsage
from goaltrack.storage import Storage, StorageUnavailable
from goaltrack.uploads import Upload


@dataclass(frozen=True, slots=True)
class UploadSlot:
    attachment_id: uuid.UUID
    object_key: str  # `{user_id}/{goal_id}/{attachment_id}`: generated, never from the client


def fields(attachment: GoalAttachment) -> dict[str, Any]:
    """The attachment as the API shows it (before its download URL is added)."""
    return {
        "id": attachment.id,
        "goal_id": attachment.goal_id,
        "file_name": attachment.file_name,
        "file_type": attachment.file_type,
        "size": attachment.size,
        "object_key": attachment.object_key,
        "created_at": attachment.created_at,
    }


async def list_attachments(session: AsyncSession, goal: Goal) -> list[GoalAttachment]:
    return list(
        await session.scalars(
            select(GoalAttachment)
            .where(GoalAttachment.goal_id == goal.id)
            .order_by(GoalAttachment.created_at, GoalAttachment.id)
        )
    )


async def reserve_upload(
    sessionmaker: async_sessionmaker[AsyncSession],
    user_id: uuid.UUID,
    goal_id: uuid.UUID,
    now: datetime,
) -> UploadSlot:
    """The new attachment's id and key, with its intent committed in a short transaction of its
    own: it must survive the request's failure. Done before the request's session takes its pooled
    connection, so an upload never holds two connections at once."""
    slot = UploadSlot(
        attachment_id=(attachment_id := uuid.uuid4()),
        object_key=f"{user_id}/{goal_id}/{attachment_id}",
    )
    async with sessionmaker() as session, session.begin():
        await files.record_upload_intent(session, slot.object_key, now)
    return slot


async def add_attachment(
    session: AsyncSession,
    storage: Storage,
    settings: Settings,
    goal: Goal,
    upload: Upload,
    slot: UploadSlot,
    now: datetime,
) -> GoalAttachment:
    count = await session.scalar(
        select(func.count()).select_from(GoalAttachment).where(GoalAttachment.goal_id == goal.id)
    )
    if (count or 0) >= settings.max_attachments_per_goal:
        raise AttachmentLimit
    stored = await session.scalar(
        select(UserUsage.stored_bytes).where(UserUsage.user_id == goal.user_id)
    )
    if (stored or 0) + upload.size > settings.max_stored_bytes_per_user:
        raise StorageQuota
    await storage.put(
        slot.object_key, upload.file, size=upload.size, content_type=upload.content_type
    )
    attachment = GoalAttachment(
        id=slot.attachment_id,
        goal_id=goal.id,
        user_id=goal.user_id,
        object_key=slot.object_key,
        file_url=f"s3://{settings.s3_bucket}/{slot.object_key}",
        file_type=upload.content_type,
        file_name=upload.file_name,
        size=upload.size,
        created_at=now,
    )
    try:
        session.add(attachment)
        await files.forget_upload_intents(session, slot.object_key)
        await session.flush()
    except Exception:
        # Remove the object now if S3 lets us; otherwise the intent's sweep will.
        with contextlib.suppress(StorageUnavailable):
            await storage.delete(slot.object_key)
        raise
    goal.updated_at = now
    await events.emit(session, AttachmentAdded(user_id=goal.user_id, goal_id=goal.id, now=now))
    return attachment


async def get_attachment(
    session: AsyncSession, goal: Goal, attachment_id: uuid.UUID
) -> GoalAttachment:
    """One of the goal's attachments, or 404."""
    attachment = await session.scalar(
        select(GoalAttachment).where(
            GoalAttachment.id == attachment_id, GoalAttachment.goal_id == goal.id
        )
    )
    if attachment is None:
        raise NotFound
    return attachment


async def delete_attachment(session: AsyncSession, goal: Goal, attachment_id: uuid.UUID) -> None:
    attachment = await get_attachment(session, goal, attachment_id)
    await session.delete(attachment)
    await session.flush()
    files.sweep_after_commit(session)  # the trigger has queued the object
