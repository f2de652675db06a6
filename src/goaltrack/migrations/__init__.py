"""Schema migrations (Alembic). `upgrade()` is what `goaltrack migrate` and the tests run."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

# The PostgreSQL advisory lock (session level) that `upgrade` holds while it migrates: a second
# `goaltrack migrate` (two deploys at once, a `docker compose run migrate` during `up`) waits for
# the first, then finds nothing left to do. Any fixed 64-bit number; this one spells "goaltrak".
MIGRATION_LOCK_KEY = 0x676F616C7472616B


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", "goaltrack:migrations")
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
