"""Indexes on tables that can be large, for migrations written from now on.

A plain CREATE INDEX blocks every write to its table while it builds: seconds to minutes on a
live table, which is an outage. CREATE INDEX CONCURRENTLY lets writes through, but PostgreSQL
refuses it inside a transaction, so it runs in Alembic's autocommit block, which first commits
what the revision has done so far. A concurrent build that fails (a deadlock, a duplicate for a
unique index) leaves an INVALID index behind: it is dropped first, so running the migration again
repairs it.

    from goaltrack.migrations.indexes import create_index_concurrently

    def upgrade() -> None:
        create_index_concurrently("ix_goals_user_id_due_on", "goals", ["user_id", "due_on"])

A table created in the same revision is empty: there `op.create_index` is right (and stays in the
revision's transaction). tests/test_migrations.py checks new revisions for this. A downgrade
drops one the same way: `op.drop_index(..., postgresql_concurrently=True)` in the autocommit block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic import op


def create_index_concurrently(
    name: str, table: str, columns: Sequence[Any], *, unique: bool = False, **kwargs: Any
) -> None:
    """`op.create_index` without locking out writes; `kwargs` as op.create_index's
    (postgresql_where=..., postgresql_include=...)."""
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, if_exists=True, postgresql_concurrently=True)
        op.create_index(
            name, table, list(columns), unique=unique, postgresql_concurrently=True, **kwargs
        )
