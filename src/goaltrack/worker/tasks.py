from __future__ import annotations

from goaltrack.clock import utcnow
from goaltrack.worker import outbox
from goaltrack.worker.registry import TICK, task
from goaltrack.worker.runtime import task_session


@task("worker.sweep_outbox", every=TICK)
async def sweep_outbox() -> int:
    """Send again the durable tasks whose first send was lost or whose worker died."""
    total = 0
    while True:
        async with task_session() as session:
            done = await outbox.sweep(session, utcnow())
        total += done
        if done < outbox.SWEEP_BATCH:
            return total
