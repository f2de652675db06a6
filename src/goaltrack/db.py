"""Database engine, the declarative base, and the request-scoped session that owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from goaltrack.config import Settings
from goaltrack.defer import (
    PRODUCER,
    UNSENT,
    Producer,
    UnsentHandler,
    has_deferred,
    reschedule_unsent,
    send_deferred,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# A session's info key: awaited with the request once a write's transaction has committed, before
# the response goes (replica.ReplicaReader.remember_write, through main).
COMMITTED = "goaltrack.committed"
# Requests that write nothing a later read must see.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Committed = Callable[[Request], Awaitable[None]]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class UUIDPrimaryKey:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class CreatedAt:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


def create_engine(
    settings: Settings,
    *,
    application_name: str,
    pool_size: int | None = None,
    pre_ping: bool = False,
) -> AsyncEngine:
    """The API engine has no pre-ping: it costs three round trips per checkout, and a connection
    PostgreSQL dropped fails its statement once (503, see errors.py) before the pool discards it.
    Workers, where a retry costs more than a ping, ping."""
    return create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
        # Statement parameters (token hashes, e-mail addresses) stay out of error messages and logs.
        hide_parameters=True,
        connect_args={
            **_statement_options(settings),
            "server_settings": {
                # Timestamps built inside SQL (json_build_object) come out in UTC, like asyncpg's.
                "timezone": "UTC",
                "application_name": application_name,  # who is who in pg_stat_activity
            },
        },
    )


def _unnamed() -> str:
    return ""


def _statement_options(settings: Settings) -> dict[str, object]:
    """Behind PgBouncer in transaction mode, SQLAlchemy's statements go unnamed and uncached: an
    unnamed statement is parsed again in the same message as its execution (asyncpg does so when
    its own cache is off), so it never depends on the server connection that parsed it. Unique
    names (SQLAlchemy's suggestion) would also work within a transaction, but every one would be
    left on some server connection until PgBouncer closes it, unless PgBouncer ran DISCARD ALL
    after every transaction."""
    if settings.database_statement_cache_size:
        return {}
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unnamed,
    }


def create_sessionmaker(
    engine: AsyncEngine,
    producer: Producer | None = None,
    unsent: UnsentHandler | None = None,
    committed: Committed | None = None,
) -> async_sessionmaker[AsyncSession]:
    """`producer` publishes the tasks a session defers, once it has committed; `unsent` takes
    the outbox rows it could not publish (`worker.outbox.resend_unsent`); `committed` is awaited
    after a request's write has committed."""
    info: dict[str, object] = {}
    if producer is not None:
        info[PRODUCER] = producer
    if unsent is not None:
        info[UNSENT] = unsent
    if committed is not None:
        info[COMMITTED] = committed
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info or None)


async def get_db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit on success, roll back on any error.

    Background tasks deferred during the request are sent only once the commit has succeeded.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()
            committed: Committed | None = session.info.get(COMMITTED)
            if committed is not None and request.method not in SAFE_METHODS:
                await committed(request)
    # Off the event loop: a publish may wait for the broker up to BROKER_TIMEOUT_SECONDS. Most
    # requests defer nothing, and skip the thread hop.
    if has_deferred(session):
        await reschedule_unsent(session, await to_thread.run_sync(send_deferred, session))


SessionDep = Annotated[AsyncSession, Depends(get_db_session, scope="function")]

# Set in a session whose transaction must stay open until the request ends (a claimed
# idempotency key records the answer in it).
KEEP_OPEN = "transaction_kept_open"


async def statements_done(session: AsyncSession) -> None:
    """The request's statements are done: its transaction commits now, and the connection goes
    back to the pool before the response is rendered and sent, not after (a write's connection
    is held only while its statements run). Unless the transaction must stay open (KEEP_OPEN):
    then `get_db_session` commits it at the end, as always. Either way the tasks the request
    deferred are sent by `get_db_session`, after the commit."""
    if not session.info.get(KEEP_OPEN):
        await session.commit()
