"""Hot reads: a statement compiled once, run on the driver connection under SQLAlchemy's pool.

asyncpg prepares it once per connection, and rows skip SQLAlchemy's result layer on their way
into the response models. Each hot read is one round trip with the caller's token check folded
in (`auth.queries.caller_is_current`); a domain's `queries.py` holds only its statements.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

# Raised on the driver path, where SQLAlchemy does not wrap them; each means the connection (or
# the server behind it) is gone, so they are 503s (see errors.py).
DRIVER_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown (restart)
    asyncpg.exceptions.InternalClientError,  # a connection left mid-protocol by one of the above
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
)

# A pooled autocommit connection for the hot reads, or the request's session inside a write
# (the statement then runs in its transaction and sees its changes).
Executor = AsyncConnection | AsyncSession


class PreparedRead:
    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=PGDialect_asyncpg())  # type: ignore[no-untyped-call]
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        # Values fixed in the statement itself (literals such as JSON keys).
        self.fixed = {name: value for name, value in compiled.params.items() if value is not None}

    async def fetch(self, executor: Executor, params: dict[str, Any]) -> list[Any]:
        connection = await executor.connection() if isinstance(executor, AsyncSession) else executor
        driver_record = await connection.get_raw_connection()
        driver = driver_record.driver_connection
        assert driver is not None
        try:
            rows: list[Any] = await driver.fetch(
                self.sql, *(params.get(name, self.fixed.get(name)) for name in self.names)
            )
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
