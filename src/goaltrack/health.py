from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(prefix="/health", tags=["health"])
logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0


@router.get("")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "PostgreSQL or Redis does not answer"}})
async def ready(request: Request) -> JSONResponse:
    checks = {"postgres": _check_postgres(request), "redis": _check_redis(request)}
    results = await asyncio.gather(*checks.values(), return_exceptions=True)
    status = {
        name: "ok" if result is True else "unavailable"
        for name, result in zip(checks, results, strict=True)
    }
    healthy = all(value == "ok" for value in status.values())
    # Push is optional (a deployment may have no mobile app yet): reported, never a 503.
    push = "configured" if request.app.state.settings.fcm_credentials_file else "disabled"
    return JSONResponse(
        {"status": "ok" if healthy else "unavailable", "checks": status, "push": push},
        status_code=200 if healthy else 503,
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
