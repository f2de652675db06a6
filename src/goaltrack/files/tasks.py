from __future__ import annotations

from goaltrack.clock import utcnow
from goaltrack.files import service
from goaltrack.worker.registry import TICK, task
from goaltrack.worker.runtime import task_session, task_storage


@task(service.PROCESS_FILE_DELETIONS, every=TICK)
async def process_file_deletions() -> int:
    """Delete every due object of the outbox; beat runs it periodically, requests after commit."""
    storage = await task_storage()
    total = 0
    more = True
    while more:
        async with task_session() as session:
            done, more = await service.sweep(session, storage, utcnow())
        total += done
    return total
