"""Application-wide dependencies: the objects created once at start-up and kept on `app.state`.

They are `async def` although they do not await: FastAPI runs plain `def` dependencies in the
threadpool, a thread hop per dependency per request for nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.config import Settings
from goaltrack.reads import PoolReader
from goaltrack.storage import Storage


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_reader(request: Request) -> PoolReader:
    """The hot reads' reader, on their own asyncpg pool (reads.py)."""
    reader: PoolReader = request.app.state.reader
    return reader


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    """For the rare write that must commit apart from the request (an upload's outbox intent)."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return sessionmaker


async def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
ReaderDep = Annotated[PoolReader, Depends(get_reader)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SessionmakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessionmaker)]
RedisDep = Annotated[Redis, Depends(get_redis)]
