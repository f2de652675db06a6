"""Behind PgBouncer in transaction mode (DATABASE_POOL_MODE=transaction): consecutive
transactions of one client connection run on whichever server connection is free, so the app may
leave no named prepared statement behind. A pool of two server connections shared by the API's
pools and the test's own makes every client meet the others' server connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from flow import api_flow
from goaltrack.config import PoolMode, Settings, get_settings
from goaltrack.dev.localstack import LocalStack, PgBouncer
from goaltrack.main import create_app

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def pgbouncer(stack: LocalStack) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(stack.root / "pgbouncer", stack.postgres, pool_size=2)
    bouncer.start()
    yield bouncer
    bouncer.stop()


def through(bouncer: PgBouncer) -> Settings:
    return get_settings().model_copy(
        update={"database_url": bouncer.url, "database_pool_mode": PoolMode.transaction}
    )


@pytest.fixture
async def client_through_pgbouncer(pgbouncer: PgBouncer) -> AsyncIterator[httpx.AsyncClient]:
    application = create_app(through(pgbouncer))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_the_api_flow_runs_through_pgbouncer(
    client_through_pgbouncer: httpx.AsyncClient,
) -> None:
    # Side by side: more clients than server connections, each transaction on whichever is free.
    await asyncio.gather(*(api_flow(client_through_pgbouncer) for _ in range(4)))


async def run_beside_open_transactions(bouncer: PgBouncer, **options: Any) -> None:
    """One client's statement, run again while each other client holds a server connection in a
    transaction: the client's next transaction runs on a server connection other than its last."""
    dsn = through(bouncer).database_driver_dsn
    reader, *holders = [await asyncpg.connect(dsn, **options) for _ in range(3)]
    try:
        assert await reader.fetchval("SELECT $1::int", 1) == 1
        for holder in holders:
            async with holder.transaction():
                await holder.execute("SELECT 1")
                assert await reader.fetchval("SELECT $1::int", 1) == 1
    finally:
        for connection in (reader, *holders):
            await connection.close()


async def test_named_statements_break_behind_pgbouncer_unnamed_ones_do_not(
    pgbouncer: PgBouncer,
) -> None:
    """Why the setting exists: asyncpg's default prepares a named statement on the server
    connection it happens to use and runs it again by name, where PgBouncer may send it to
    another. With the statement cache off (what the setting does) each run parses its own."""
    with pytest.raises(asyncpg.exceptions.InvalidSQLStatementNameError):
        await run_beside_open_transactions(pgbouncer)
    await run_beside_open_transactions(
        pgbouncer, statement_cache_size=through(pgbouncer).database_statement_cache_size
    )
