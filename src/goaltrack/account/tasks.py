from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta

from sqlalchemy import select

from goaltrack.account import export as exporter
from goaltrack.account import service
from goaltrack.account.models import DataExport
from goaltrack.account.queries import get_locale
from goaltrack.clock import utcnow
from goaltrack.config import get_settings
from goaltrack.files import service as files
from goaltrack.i18n import t
from goaltrack.notifications.service import notify
from goaltrack.storage import StorageUnavailable
from goaltrack.tasks_queue import defer
from goaltrack.worker import backoff, celery_app, run_async, task_session, task_storage

logger = logging.getLogger(__name__)

EXPORT_TTL = timedelta(days=7)  # also the longest a SigV4 presigned URL may live
EXPORT_RETRIES = 5
# Longer than the task's time limit: a pending export this old has no task working on it.
EXPORT_RESEND_AFTER = timedelta(minutes=15)
EXPORT_GIVE_UP = timedelta(hours=2)
PURGE_BATCH = 100


@celery_app.task(bind=True, max_retries=EXPORT_RETRIES, soft_time_limit=600, time_limit=660)
def build_export(self, export_id: str) -> None:  # type: ignore[no-untyped-def]
    """Write the user's ZIP to S3 and announce it with an `export_ready` notification. Idempotent:
    an export that is no longer pending is left alone."""

    async def run() -> None:
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
        url = await storage.presigned_get(
            key,
            expires_in=int(EXPORT_TTL.total_seconds()),
            download_name=f"goaltrack-export-{now.date().isoformat()}.zip",
            as_attachment=True,
        )
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
                type="export_ready",
                title=t(locale, "export.title"),
                body=t(locale, "export.body", days=EXPORT_TTL.days),
                data={
                    "export_id": export_id,
                    "url": url,
                    "expires_at": export.expires_at.isoformat(),
                },
                now=now,
            )

    try:
        run_async(run)
    except StorageUnavailable as exc:
        if self.request.retries >= EXPORT_RETRIES:
            run_async(lambda: _mark_failed(export_id, "file storage unavailable"))
            raise
        raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc


async def _mark_failed(export_id: str, reason: str) -> None:
    async with task_session() as session:
        export = await session.get(DataExport, uuid.UUID(export_id), with_for_update=True)
        if export is not None and export.status == "pending":
            export.status = "failed"
            export.error = reason


@celery_app.task
def purge_deleted_accounts() -> int:
    """Hard-delete the accounts whose grace period is over."""
    settings = get_settings()

    async def run() -> int:
        total = 0
        while True:
            async with task_session() as session:
                done = await service.purge_expired_accounts(
                    session, utcnow(), settings.account_deletion_grace_days, PURGE_BATCH
                )
            total += done
            if done < PURGE_BATCH:
                return total

    return run_async(run)


@celery_app.task
def maintain_exports() -> None:
    """Exports live a week: then the file goes (through the outbox) and so does the row. A pending
    export whose task was lost (broker down at enqueue time) is sent again, and given up after
    EXPORT_GIVE_UP so that the user can ask again."""

    async def run() -> None:
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
            stale = await session.scalars(
                select(DataExport)
                .where(
                    DataExport.status == "pending",
                    DataExport.created_at <= now - EXPORT_RESEND_AFTER,
                )
                .with_for_update(skip_locked=True)
            )
            for export in stale:
                if export.created_at <= now - EXPORT_GIVE_UP:
                    export.status = "failed"
                    export.error = "the export did not complete in time"
                else:
                    defer(session, build_export, str(export.id))

    run_async(run)
