"""Hot reads: a statement compiled once, run on a raw asyncpg pool, rows straight into JSON.

Each hot read is one round trip with the caller's token check folded in
(`auth.caller.caller_is_current`); a domain's `queries.py` holds only its statements. The API's
hot reads run on their own small asyncpg pool (`create_read_pool`): checking a connection out of
SQLAlchemy's pool through a FastAPI dependency cost more CPU than the query itself (bench/).
Where a statement runs is typed, not tested at run time: `PoolReader` (a route's hot read, on the
read pool) or `SessionReader` (inside a write, on the request's session, so it sees the write).
Their rows are rendered by `json_body` (orjson; the hot routes through goaltrack.hotpath, a write
that answers with its goal through `json_response`), byte for byte what the response model would
produce (tests/test_reads.py holds the two together), without validating rows we wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy import Row
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from goaltrack.config import Settings

# Raised on the driver path, where SQLAlchemy does not wrap them; each means the connection (or
# the server behind it) is gone, so they are 503s (see errors.py).
DRIVER_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown (restart)
    asyncpg.exceptions.InternalClientError,  # a connection left mid-protocol by one of the above
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
)

# A wait for a free connection plus the statement: like SQLAlchemy's pool_timeout, then a 503.
READ_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5.0


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _decode_json(connection: asyncpg.Connection) -> None:
    # json and jsonb values arrive decoded (json_agg arrays, jsonb columns), as they do
    # on SQLAlchemy's connections.
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads
        )


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """The pool's connections run single autocommit SELECTs and never change session state, so
    the default reset (RESET ALL, UNLISTEN, CLOSE ALL...: a round trip per release) is skipped.
    An open transaction is still rolled back by asyncpg itself."""


async def create_read_pool(
    settings: Settings, *, application_name: str, dsn: str | None = None
) -> asyncpg.Pool:
    """Opens no connection yet (min_size 0): the API starts while PostgreSQL is down, and a
    connection PostgreSQL dropped is replaced at its next checkout. `dsn`: another server's (a
    replica's) instead of DATABASE_URL's."""
    return await asyncpg.create_pool(
        dsn or settings.database_driver_dsn,
        min_size=0,
        max_size=settings.database_read_pool_size,
        init=_decode_json,
        reset=_nothing_to_reset,
        timeout=CONNECT_TIMEOUT_SECONDS,
        # 0 behind PgBouncer in transaction mode: each read is parsed with its execution.
        statement_cache_size=settings.database_statement_cache_size,
        server_settings={"timezone": "UTC", "application_name": application_name},
    )


class PreparedStatement:
    """A statement compiled once, for asyncpg: run by a `Reader` for the hot reads, `execute` for a
    write's statement in the request's transaction."""

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=PGDialect_asyncpg())  # type: ignore[no-untyped-call]
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        # Values fixed in the statement itself (literals such as JSON keys).
        self.fixed = {name: value for name, value in compiled.params.items() if value is not None}

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The statement's positional arguments from named parameters."""
        return [params.get(name, self.fixed.get(name)) for name in self.names]

    async def execute(self, session: AsyncSession, params: dict[str, Any]) -> Sequence[Row[Any]]:
        """The rows, in the session's transaction, through SQLAlchemy's connection (which begins
        the transaction when this is its first statement, and wraps errors as for any statement)
        but without compiling again. Core would also take any parameter named like a column of
        an UPDATE inside the statement as one more value to set (`user_id`, `goal_id`): compiled
        here, the statement sets what it says."""
        connection = await session.connection()
        return (await connection.exec_driver_sql(self.sql, tuple(self.args(params)))).all()


class Reader(Protocol):
    """Where a hot read's statement runs."""

    async def fetch(self, statement: PreparedStatement, params: Mapping[str, Any]) -> list[Any]:
        """The rows (asyncpg records); asyncpg prepares the statement once per connection (behind
        PgBouncer's transaction mode: with each execution, unnamed)."""
        ...


class PoolReader:
    """A route's hot read: one autocommit statement on a connection of `pool`, the connections
    taken in the order the reads asked for them.

    asyncpg's pool alone is not first come, first served: a connection it gets back goes to
    whichever read asks next before the waiter woken for it runs (a request that has just
    arrived), and that waiter goes back to the end of the queue (asyncio.Queue). With 64 reads
    in flight on 20 connections half of them jumped the queue and others were passed over up to
    17 times: a median of 20 ms, a p99 of 190 (bench/profile.py, the feed's page 500). A
    semaphore of the pool's size in front of it (asyncio's hands a freed place to its longest
    waiter, and a newcomer queues behind the waiters) keeps the order, and no read is woken to
    find nothing: a median of 30 ms, a p99 of 43."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._turns = asyncio.Semaphore(pool.get_max_size())

    async def fetch(self, statement: PreparedStatement, params: Mapping[str, Any]) -> list[Any]:
        # asyncio.timeout, not acquire(timeout=): no extra task per request; it bounds the wait
        # for a turn as well.
        async with (
            asyncio.timeout(READ_TIMEOUT_SECONDS),
            self._turns,
            self.pool.acquire() as connection,
        ):
            rows: list[Any] = await connection.fetch(statement.sql, *statement.args(params))
        return rows


class SessionReader:
    """A hot read inside a write: on the request's connection, in its transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def fetch(self, statement: PreparedStatement, params: Mapping[str, Any]) -> list[Any]:
        connection = await self.session.connection()
        driver_record = await connection.get_raw_connection()
        driver = driver_record.driver_connection
        assert driver is not None
        try:
            rows: list[Any] = await driver.fetch(statement.sql, *statement.args(params))
        except BaseException as exc:
            # SQLAlchemy does not see errors raised on the driver, so it cannot tell a dropped or
            # half-used connection (server restart, failover, a cancelled request) from a healthy
            # one: discard it. This request fails (503 for an outage); the next one reconnects.
            if isinstance(exc, DRIVER_CONNECTION_ERRORS):
                # The server went away for every pooled connection, not only this one: as
                # SQLAlchemy does on a disconnect it sees, replace all the connections opened
                # before now at their next checkout, so none fails a later request.
                connection.sync_engine.pool._invalidate(driver_record, exc, _checkin=False)
            await connection.invalidate()
            raise
        return rows


def _encode_other(value: Any) -> str:
    # asyncpg's UUID type (a uuid.UUID subclass orjson does not take as one) and plain UUIDs.
    return str(value)


def json_body(content: Any) -> bytes:
    """JSON exactly as our response models serialise (UTC as `Z`, compact, UTF-8)."""
    return orjson.dumps(content, default=_encode_other, option=orjson.OPT_UTC_Z)


def json_response(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A hot read's response, rendered from its rows: the route declares the response model
    (`response_model=`) for the contract, and this body is what that model would have produced."""
    return Response(
        json_body(content), status_code=status_code, headers=headers, media_type="application/json"
    )
