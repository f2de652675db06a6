from __future__ import annotations

from datetime import timedelta

from goaltrack.achievements import service
from goaltrack.redis_client import create_redis
from goaltrack.worker.registry import task
from goaltrack.worker.runtime import task_session, task_settings


@task("achievements.refresh_stats", every=timedelta(days=1))
async def refresh_stats() -> None:
    """Recompute the share of users per achievement once a day (the cache lives 24 h)."""
    redis = create_redis(task_settings(), timeout=5)
    try:
        async with task_session() as session:
            await service.refresh_stats(session, redis)
    finally:
        await redis.aclose()
