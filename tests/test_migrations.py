"""Migrations that cannot race: `goaltrack migrate` holds an advisory lock while it migrates, and
new revisions build indexes on existing tables concurrently (goaltrack.migrations.indexes)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from goaltrack.dev.localstack import LocalStack
from goaltrack.migrations import MIGRATION_LOCK_KEY, alembic_config
from goaltrack.migrations.indexes import create_index_concurrently
from helpers import start_goaltrack, wait_until

VERSIONS = Path(__file__).resolve().parents[1] / "src" / "goaltrack" / "migrations" / "versions"
# The revisions applied before the lock and the helper existed: left as they are (below).
LAST_REVISION_BEFORE_THE_HELPER = 20

SCHEMA_QUERY = """
SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public'
UNION ALL SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL SELECT 'constraint ' || conname FROM pg_constraint
  WHERE connamespace = 'public'::regnamespace
ORDER BY 1
"""


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def schema_of(url: str) -> list[str]:
    connection = await asyncpg.connect(plain(url))
    try:
        return [row[0] for row in await connection.fetch(SCHEMA_QUERY)]
    finally:
        await connection.close()


async def waiting_for_the_lock(connection: asyncpg.Connection) -> int:
    """`goaltrack migrate` processes of this database queued on the migration lock."""
    high, low = divmod(MIGRATION_LOCK_KEY, 2**32)
    count: int = await connection.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = $1 AND objid = $2 AND objsubid = 1",
        high,
        low,
    )
    return count


@pytest.mark.timeout(300)  # two interpreters importing the app on a busy machine
async def test_two_migrates_at_once_make_one_schema(stack: LocalStack, tmp_path: Path) -> None:
    """Both start on an empty database while the lock is held elsewhere: both queue on it (a
    migrator without the lock would not wait), then, released, both exit 0 with one schema."""
    name = f"migrate_race_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(stack.postgres.create_database, name)
    url = stack.postgres.url_for(name)
    holder = await asyncpg.connect(plain(url))
    migrators: list[subprocess.Popen[bytes]] = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        env = os.environ | {"DATABASE_URL": url}
        migrators = [
            start_goaltrack("migrate", cwd=tmp_path, env=env, log=tmp_path / f"migrate-{i}.log")
            for i in range(2)
        ]

        async def both_queued() -> bool:
            for index, process in enumerate(migrators):
                assert process.poll() is None, (tmp_path / f"migrate-{index}.log").read_text()
            return await waiting_for_the_lock(holder) == 2

        await wait_until(both_queued, timeout=240, interval=0.1)
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        for index, process in enumerate(migrators):
            code = await asyncio.to_thread(process.wait, 120)
            assert code == 0, (tmp_path / f"migrate-{index}.log").read_text()

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert await holder.fetch("SELECT version_num FROM alembic_version") == [(head,)]
        assert await schema_of(url) == await schema_of(stack.postgres.url)
    finally:
        for process in migrators:
            if process.poll() is None:
                process.kill()
                process.wait()
        await holder.close()
        admin = await asyncpg.connect(plain(stack.postgres.url_for("postgres")))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def test_the_helper_builds_a_valid_index_concurrently_and_can_run_again(
    stack: LocalStack,
) -> None:
    table = f"concurrent_{uuid.uuid4().hex[:8]}"
    index = f"ix_{table}_value"

    def build(connection: Connection) -> None:
        context = MigrationContext.configure(connection)
        with context.begin_transaction(), Operations.context(context):
            create_index_concurrently(
                index, table, ["value"], postgresql_where=sa.text("value > 10")
            )

    engine = create_async_engine(stack.postgres.url)
    try:
        async with engine.connect() as connection:
            await connection.execute(sa.text(f"CREATE TABLE {table} (value integer)"))
            await connection.execute(
                sa.text(f"INSERT INTO {table} SELECT generate_series(1, 1000)")
            )
            await connection.commit()
        for _ in range(2):  # the second run drops and builds it again
            async with engine.connect() as connection:
                await connection.run_sync(build)
        async with engine.connect() as connection:
            valid = await connection.scalar(
                sa.text(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = CAST(:name AS regclass)"
                ),
                {"name": index},
            )
            assert valid is True
            await connection.execute(sa.text(f"DROP TABLE {table}"))
            await connection.commit()
    finally:
        await engine.dispose()


def revision_number(path: Path) -> int:
    return int(path.name.split("_", 1)[0])


def blocking_index_builds(source: str) -> list[str]:
    """A revision's index builds that lock out writes: op.create_index on a table the revision
    did not create, without postgresql_concurrently, and raw CREATE INDEX without CONCURRENTLY."""
    created = set(re.findall(r'create_table\(\s*"([a-z_0-9]+)"', source))
    found = []
    for call in re.finditer(r"op\.create_index\((?P<args>.*?)\)\n", source, re.S):
        arguments = call["args"]
        names = re.findall(r'"([a-z_0-9]+)"', arguments)
        table = names[1] if len(names) >= 2 else "?"
        if "postgresql_concurrently=True" not in arguments and table not in created:
            found.append(f"op.create_index on {table}")
    found += re.findall(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)\S+", source, re.I)
    return found


def test_the_check_for_blocking_index_builds() -> None:
    assert blocking_index_builds('op.create_index("ix_goals_x", "goals", ["x"])\n') == [
        "op.create_index on goals"
    ]
    assert blocking_index_builds('op.execute("CREATE INDEX ix_goals_x ON goals (x)")') == [
        "CREATE INDEX ix_goals_x"
    ]
    fresh = 'op.create_table(\n    "things",\n)\nop.create_index("ix_things_x", "things", ["x"])\n'
    assert blocking_index_builds(fresh) == []
    assert blocking_index_builds('create_index_concurrently("ix_goals_x", "goals", ["x"])') == []
    assert blocking_index_builds('op.execute("CREATE INDEX CONCURRENTLY ix ON goals (x)")') == []


def test_new_revisions_build_indexes_on_existing_tables_concurrently() -> None:
    """From revision 0021 on, an index on a table the revision did not create goes through
    goaltrack.migrations.indexes. Revisions 0001-0020 have run wherever the app runs: editing
    them changes nothing there, and on a fresh database their tables are empty."""
    revisions = sorted(VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert revision_number(revisions[-1]) >= LAST_REVISION_BEFORE_THE_HELPER
    for path in revisions:
        if revision_number(path) > LAST_REVISION_BEFORE_THE_HELPER:
            assert blocking_index_builds(path.read_text()) == [], path.name
    # The applied ones do have such builds: the check reads them.
    assert blocking_index_builds((VERSIONS / "0009_live_sessions.py").read_text())
