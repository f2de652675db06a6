"""Alembic environment: async engine, URL from the application's settings, one migrator at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from goaltrack.config import SettingsWithoutUserSecrets
from goaltrack.migrations import MIGRATION_LOCK_KEY
from goaltrack.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # Session level, not transaction level: it outlives the commits of an autocommit_block
    # (goaltrack.migrations.indexes), and goes with the connection (engine.dispose below), also
    # when a migration fails. Committed before Alembic begins its own transaction, so the version
    # table is read only once the lock is held.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.commit()
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    # `goaltrack migrate` is given DATABASE_URL and no user secret (docker-compose.yml).
    url = context.config.attributes.get("database_url") or SettingsWithoutUserSecrets().database_url
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
asyncio.run(_run_online())
