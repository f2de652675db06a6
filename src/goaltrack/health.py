from __future__ import annotations

import asyncio
import logging
import threading
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from sqlalchemy import text

router = APIRouter(prefix="/health", tags=["health"])
logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0

# Set when this process has been told to stop (goaltrack.serving): readiness answers 503 from then
# on, so the proxy's health check takes the process out of rotation while it still serves.
stopping = threading.Event()

HealthStatus = Literal["ok", "unavailable"]


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class ReadinessChecks(BaseModel):
    postgres: HealthStatus
    redis: HealthStatus


class Readiness(BaseModel):
    """The same body with 200 (every check ok) and 503 (one is unavailable)."""

    status: HealthStatus
    checks: ReadinessChecks
    # Push is optional (a deployment may have no mobile app yet): reported, never a 503.
    push: Literal["configured", "disabled"]
    # The process is shutting down (a deploy): 503 whatever the checks say.
    stopping: bool


@router.get("")
async def live() -> Liveness:
    """The process answers (no dependency is checked)."""
    return Liveness()


@router.get(
    "/ready",
    responses={
        503: {
            "model": Readiness,
            "description": "PostgreSQL or Redis does not answer, or the process is stopping",
        }
    },
)
async def ready(request: Request, response: Response) -> Readiness:
    """PostgreSQL and Redis both answer, each within a couple of seconds, and the process is not
    stopping."""
    pending = {"postgres": _check_postgres(request), "redis": _check_redis(request)}
    results = await asyncio.gather(*pending.values(), return_exceptions=True)
    checks = ReadinessChecks.model_validate(
        {
            name: "ok" if result is True else "unavailable"
            for name, result in zip(pending, results, strict=True)
        }
    )
    healthy = checks.postgres == "ok" and checks.redis == "ok" and not stopping.is_set()
    response.status_code = 200 if healthy else 503
    return Readiness(
        status="ok" if healthy else "unavailable",
        checks=checks,
        push="configured" if request.app.state.settings.fcm_credentials_file else "disabled",
        stopping=stopping.is_set(),
    )


async def _check_postgres(request: Request) -> bool:
    async with (
        asyncio.timeout(READY_TIMEOUT_SECONDS),
        request.app.state.engine.connect() as connection,
    ):
        await connection.execute(text("SELECT 1"))
    return True


async def _check_redis(request: Request) -> bool:
    async with asyncio.timeout(READY_TIMEOUT_SECONDS):
        return bool(await request.app.state.redis.ping())
