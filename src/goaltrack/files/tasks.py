from __future__ import annotations

from goaltrack.clock import utcnow
from goaltrack.files import service
from goaltrack.worker import celery_app, run_async, task_session, task_storage


@celery_app.task
def process_file_deletions() -> int:
    """Delete every due object of the outbox; beat runs it periodically, requests after commit."""

    async def run() -> int:
        storage = await task_storage()
        total = 0
        more = True
        while more:
            async with task_session() as session:
                done, more = await service.sweep(session, storage, utcnow())
            total += done
        return total

    return run_async(run)
