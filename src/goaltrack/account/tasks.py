from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta

from sqlalchemy import select

from goaltrack import mail
from goaltrack.account import export as exporter
from goaltrack.account import service
from goaltrack.account.models import DataExport
from goaltrack.auth.models import User
from goaltrack.clock import utcnow
from goaltrack.defer import defer
from goaltrack.files import service as files
from goaltrack.i18n import t
from goaltrack.notifications.kinds import ExportReadyData
from goaltrack.notifications.service import notify
from goaltrack.profile.queries import get_locale
from goaltrack.storage import StorageUnavailable
from goaltrack.worker.outbox import OutboxTask, defer_durably
from goaltrack.worker.registry import TICK, RetryLater, backoff, task
from goaltrack.worker.runtime import (
    current_attempt,
    in_batches,
    task_session,
    task_settings,
    task_storage,
)

logger = logging.getLogger(__name__)

EXPORT_TTL = timedelta(days=7)  # also the longest a SigV4 presigned URL may live
EXPORT_RETRIES = 5
# Longer than the task's time limit: a pending export this old has no task working on it.
EXPORT_RESEND_AFTER = timedelta(minutes=15)
EXPORT_GIVE_UP = timedelta(hours=2)
PURGE_BATCH = 100
SEND_EXPORT_READY = "account.send_export_ready"


@task(
    service.BUILD_EXPORT,
    max_retries=EXPORT_RETRIES,
    durable=True,
    soft_time_limit=600,
    time_limit=660,
)
async def build_export(export_id: str) -> None:
    """Write the user's ZIP to S3 and announce it with an `export_ready` notification. Idempotent:
    an export that is no longer pending is left alone."""
    try:
        await _build_export(export_id)
    except StorageUnavailable as exc:
        if current_attempt().is_last:
            await _mark_failed(export_id, "file storage unavailable")
            raise
        raise RetryLater(backoff(current_attempt().retries)) from exc


async def _build_export(export_id: str) -> None:
    storage = await task_storage()
    now = utcnow()
    async with task_session() as session:
        export = await session.get(DataExport, uuid.UUID(export_id))
        if export is None or export.status != "pending":
            return
        user_id = export.user_id
        key = exporter.export_key(user_id, export.id)
        document, attachments = await exporter.collect(session, user_id, now)
        # If this task dies between the upload and the final commit, the sweep removes the file.
        await files.record_upload_intent(session, key, now)
    archive = await exporter.write_zip(document, attachments, storage)
    try:
        size = archive.seek(0, os.SEEK_END)
        archive.seek(0)
        await storage.put(key, archive, size=size, content_type="application/zip")
    finally:
        archive.close()
    async with task_session() as session:
        export = await session.get(DataExport, uuid.UUID(export_id), with_for_update=True)
        if export is None or export.status != "pending":
            return  # the account went meanwhile; the intent's sweep removes the file
        export.status = "ready"
        export.object_key = key
        export.size = size
        export.completed_at = now
        export.expires_at = now + EXPORT_TTL
        await files.forget_upload_intents(session, key)
        locale = await get_locale(session, user_id)
        await notify(
            session,
            user_id=user_id,
            data=ExportReadyData(
                export_id=export.id,
                url=service.export_path(export.id),
                expires_at=export.expires_at,
            ),
            title=t(locale, "export.title"),
            body=t(locale, "export.body", count=EXPORT_TTL.days),
            now=now,
        )
        defer_durably(session, SEND_EXPORT_READY, export_id, now=now, user_id=user_id)


@task(SEND_EXPORT_READY, max_retries=mail.MAIL_RETRIES, durable=True)
async def send_export_ready(export_id: str) -> None:
    """The news by e-mail too (the push may not reach a phone). Its link opens the app, which
    downloads with its own token: no download link that outlives a logout sits in a mailbox."""
    async with task_session() as session:
        row = (
            await session.execute(
                select(DataExport, User.email)
                .join(User, User.id == DataExport.user_id)
                .where(DataExport.id == uuid.UUID(export_id))
            )
        ).one_or_none()
        if row is None:
            return  # the export (or the account) is gone
        export, email = row
        if export.status != "ready" or export.expires_at is None:
            return
        locale = await get_locale(session, export.user_id)
        expires_at = export.expires_at
    lifetime = int((expires_at - utcnow()).total_seconds())
    if lifetime <= 60:
        return  # expired meanwhile: news of it helps nobody
    settings = task_settings()
    await mail.send_or_retry(
        settings,
        mail.Mail(
            to=email,
            subject=t(locale, "export.title"),
            text=t(locale, "export.mail", count=max(1, lifetime // 86400)),
            link=settings.export_open_url.format(export_id=export_id),
        ),
    )


async def _mark_failed(export_id: str, reason: str) -> None:
    async with task_session() as session:
        export = await session.get(DataExport, uuid.UUID(export_id), with_for_update=True)
        if export is not None and export.status == "pending":
            export.status = "failed"
            export.error = reason


@task("account.purge_deleted_accounts", every=TICK)
async def purge_deleted_accounts() -> int:
    """Hard-delete the accounts whose grace period is over."""
    grace_days = task_settings().account_deletion_grace_days
    return await in_batches(
        PURGE_BATCH,
        lambda session: service.purge_expired_accounts(
            session, now=utcnow(), grace_days=grace_days, limit=PURGE_BATCH
        ),
    )


@task("account.maintain_exports", every=TICK)
async def maintain_exports() -> None:
    """Exports live a week: then the file goes (through the outbox) and so does the row. A pending
    export whose build has no outbox row (it was given up, or asked for before builds went through
    the outbox) is sent again, and any is given up after EXPORT_GIVE_UP so that the user can ask
    again."""
    now = utcnow()
    async with task_session() as session:
        expired = list(
            await session.scalars(
                select(DataExport)
                .where(DataExport.expires_at <= now)
                .limit(1000)
                .with_for_update(skip_locked=True)
            )
        )
        for export in expired:
            if export.object_key:
                files.queue_object_deletion(session, export.object_key)
            await session.delete(export)
        stale = list(
            await session.scalars(
                select(DataExport)
                .where(
                    DataExport.status == "pending",
                    DataExport.created_at <= now - EXPORT_RESEND_AFTER,
                )
                .with_for_update(skip_locked=True)
            )
        )
        # A build still in the outbox is the outbox's to send again (a user has one pending
        # export at most): sending it here too would build it twice.
        in_outbox = set(
            await session.scalars(
                select(OutboxTask.user_id).where(
                    OutboxTask.user_id.in_({export.user_id for export in stale}),
                    OutboxTask.name == service.BUILD_EXPORT,
                )
            )
        )
        for export in stale:
            if export.created_at <= now - EXPORT_GIVE_UP:
                export.status = "failed"
                export.error = "the export did not complete in time"
            elif export.user_id not in in_outbox:
                defer(session, service.BUILD_EXPORT, str(export.id))
