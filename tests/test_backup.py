"""Backups with point-in-time recovery: scripts/backup and scripts/restore against a real
PostgreSQL whose WAL pgBackRest archives continuously, and rclone copying the session's real S3
bucket. Write, note the time, write more; restore to the noted time into a new data directory,
start it, compare. (The repository is a local directory here; docker-compose.yml points the same
settings at an S3 bucket, see docs/deploy.md.)"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from goaltrack.config import get_settings
from goaltrack.dev.localstack import LocalStack, Postgres, free_port
from helpers import installed, wait_until

ROOT = Path(__file__).resolve().parents[1]
BACKUP = ROOT / "scripts" / "backup"
RESTORE = ROOT / "scripts" / "restore"
METRIC = re.compile(
    r'^goaltrack_backup_last_(success|failure)_timestamp_seconds\{part="(\w+)"\} (\d+)$', re.M
)


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL's files belong to the user the server runs as (`postgres` when we are root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Archived:
    """A cluster whose WAL pgBackRest archives into `root/repo`, and the scripts' environment."""

    root: Path
    postgres: Postgres
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.postgres.url.replace("postgresql+asyncpg://", "postgresql://", 1)

    def run(self, *command: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
        variables = [f"{key}={value}" for key, value in (self.env | env).items()]
        return subprocess.run(
            as_postgres(["env", "-i", *variables, *map(str, command)]),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def metrics(self) -> dict[tuple[str, str], int]:
        text = (self.root / "metrics" / "goaltrack_backup.prom").read_text()
        return {(part, outcome): int(at) for outcome, part, at in METRIC.findall(text)}


@pytest.fixture
def archived(stack: LocalStack) -> Iterator[Archived]:
    installed("pgbackrest")
    installed("rclone")
    root = Path(tempfile.mkdtemp(prefix="goaltrack-pitr-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    config = root / "pgbackrest.conf"
    postgres = Postgres(root / "pg", durable=True)
    config.write_text(
        "[global]\n"
        f"repo1-path={root / 'repo'}\n"
        "repo1-retention-full=2\n"
        f"lock-path={root / 'lock'}\n"
        f"log-path={root / 'log'}\n"
        "log-level-file=off\n"
        "log-level-console=warn\n"
        "[goaltrack]\n"
        f"pg1-path={postgres.data_dir}\n"
        f"pg1-port={postgres.port}\n"
        f"pg1-socket-path={postgres.data_dir}\n"
        "pg1-user=postgres\n"
        # The test's server keeps its socket in its data directory (production's is in
        # /var/run/postgresql): a copied socket lock would stop the restored server.
        f"exclude=.s.PGSQL.{postgres.port}\n"
        f"exclude=.s.PGSQL.{postgres.port}.lock\n"
    )
    assert stack.s3 is not None
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "PGBACKREST_CONFIG": str(config),
        "PGBACKREST_REPO1_PATH": str(root / "repo"),  # as the config file: the copy reads it
        "BACKUP_REPO_TARGET": str(root / "offsite" / "pgbackrest"),
        "BACKUP_STATE_DIR": str(root / "state"),
        "BACKUP_METRICS_FILE": str(root / "metrics" / "goaltrack_backup.prom"),
        # The app's bucket, through rclone's S3 backend, into a local directory.
        "RCLONE_CONFIG_APP_TYPE": "s3",
        "RCLONE_CONFIG_APP_PROVIDER": "Other",
        "RCLONE_CONFIG_APP_ENDPOINT": stack.s3.endpoint_url,
        "RCLONE_CONFIG_APP_ACCESS_KEY_ID": stack.s3.access_key,
        "RCLONE_CONFIG_APP_SECRET_ACCESS_KEY": stack.s3.secret_key,
        "BACKUP_OBJECTS_SOURCE": f"app:{get_settings().s3_bucket}",
        "BACKUP_OBJECTS_TARGET": str(root / "objects"),
    }
    try:
        postgres.start()
        archive = f"pgbackrest --config={config} --stanza=goaltrack archive-push %p"
        subprocess.run(
            as_postgres(
                [
                    *("psql", "-h", str(postgres.data_dir), "-p", str(postgres.port)),
                    *("-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"),
                    *("-c", "ALTER SYSTEM SET archive_mode = on"),
                    *("-c", f"ALTER SYSTEM SET archive_command = '{archive}'"),
                ]
            ),
            check=True,
            capture_output=True,
        )
        postgres.stop()  # archive_mode takes a restart
        postgres.start()
        yield Archived(root, postgres, env)
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def promoted(url: str) -> Callable[[], Awaitable[bool]]:
    """Recovery is over: the restored cluster has promoted itself and takes writes."""

    async def check() -> bool:
        connection = await asyncpg.connect(url)
        try:
            return not await connection.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await connection.close()

    return check


async def rows(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [row[0] for row in await connection.fetch("SELECT note FROM notes ORDER BY id")]
    finally:
        await connection.close()


async def execute(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.mark.timeout(300)
async def test_restore_to_a_noted_time_brings_back_what_was_committed_by_then(
    archived: Archived, app: object, stack: LocalStack
) -> None:
    bucket = get_settings().s3_bucket
    storage = app.state.storage  # type: ignore[attr-defined]
    key = f"backup-test/{uuid.uuid4()}.bin"
    await storage.client.put_object(Bucket=bucket, Key=key, Body=b"attachment")

    await execute(
        archived.url,
        "CREATE TABLE notes (id bigserial PRIMARY KEY, note text NOT NULL)",
        "INSERT INTO notes (note) VALUES ('in the backup')",
    )
    result = await asyncio.to_thread(archived.run, BACKUP, "full")
    assert result.returncode == 0, result.stderr
    assert set(archived.metrics()) == {
        ("database", "success"),
        ("repository", "success"),
        ("objects", "success"),
    }
    offsite = archived.root / "offsite" / "pgbackrest"
    assert (offsite / "backup" / "goaltrack" / "backup.info").exists()
    assert (archived.root / "objects" / "latest" / key).read_bytes() == b"attachment"

    # After the backup: only the archived WAL has these.
    await execute(archived.url, "INSERT INTO notes (note) VALUES ('archived before the time')")
    connection = await asyncpg.connect(archived.url)
    try:
        noted = await connection.fetchval(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'"
        )
        await connection.execute("INSERT INTO notes (note) VALUES ('after the time')")
    finally:
        await connection.close()
    assert await rows(archived.url) == [
        "in the backup",
        "archived before the time",
        "after the time",
    ]

    # An object deleted since: the next run keeps it aside, dated.
    await storage.client.delete_object(Bucket=bucket, Key=key)
    result = await asyncio.to_thread(archived.run, BACKUP, "incr")  # also `pgbackrest check`
    assert result.returncode == 0, result.stderr
    assert not (archived.root / "objects" / "latest" / key).exists()
    [kept] = (archived.root / "objects" / "removed").glob(f"*/{key}")
    assert kept.read_bytes() == b"attachment"
    # Every WAL segment archived so far is in the off-site copy too.
    archived_wal = {path.name for path in (archived.root / "repo" / "archive").rglob("0*")}
    assert archived_wal
    assert archived_wal == {path.name for path in (offsite / "archive").rglob("0*")}

    restored = Postgres(archived.root / "restored", port=free_port(), durable=True)
    result = await asyncio.to_thread(archived.run, RESTORE, "--time", noted, restored.data_dir)
    assert result.returncode == 0, result.stderr
    try:
        await asyncio.to_thread(restored.start)
        url = restored.url.replace("postgresql+asyncpg://", "postgresql://", 1)

        await wait_until(promoted(url), timeout=120, interval=0.2)
        assert await rows(url) == ["in the backup", "archived before the time"]
        await execute(url, "INSERT INTO notes (note) VALUES ('written after the restore')")
    finally:
        restored.stop()

    # The disaster recovery in place (docs/deploy.md): over the stopped cluster's own directory.
    archived.postgres.stop()
    result = await asyncio.to_thread(
        archived.run, RESTORE, "--delta", "--time", noted, archived.postgres.data_dir
    )
    assert result.returncode == 0, result.stderr
    await asyncio.to_thread(archived.postgres.start)
    await wait_until(promoted(archived.url), timeout=120, interval=0.2)
    assert await rows(archived.url) == ["in the backup", "archived before the time"]


async def test_restore_refuses_a_directory_that_is_not_empty(archived: Archived) -> None:
    result = await asyncio.to_thread(archived.run, RESTORE, archived.postgres.data_dir)
    assert result.returncode != 0
    assert "is not empty" in result.stderr
    result = await asyncio.to_thread(
        archived.run, RESTORE, "--time", "2026-12-01 14:30", archived.root / "new"
    )
    assert result.returncode != 0
    assert "an offset" in result.stderr


async def test_a_failed_backup_is_recorded_for_the_alert(archived: Archived) -> None:
    archived.postgres.stop()  # nothing to back up
    result = await asyncio.to_thread(archived.run, BACKUP, "full")
    assert result.returncode != 0
    assert "the database part failed" in result.stderr
    assert set(archived.metrics()) == {("database", "failure")}


def test_the_alert_rules_on_stale_and_failed_backups() -> None:
    """deploy/prometheus/backup-rules.yml against its promtool unit tests: a backup older than
    its schedule (and an hour) alerts, daily ones do not; a stale off-site WAL copy, a failed
    part, no metrics at all."""
    promtool = installed("promtool", "prometheus")
    rules = ROOT / "deploy" / "prometheus"
    for command in (
        ["check", "rules", "backup-rules.yml"],
        ["test", "rules", "backup-rules.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *command], cwd=rules, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    # The metrics the rules read are the ones scripts/backup writes.
    written = set(re.findall(r"goaltrack_backup_\w+", BACKUP.read_text()))
    read = set(re.findall(r"goaltrack_backup_\w+", (rules / "backup-rules.yml").read_text()))
    assert read <= written


def test_the_backup_services_health_check(tmp_path: Path) -> None:
    """deploy/backup-loop --check: healthy with nothing yet and with recent successes; unhealthy
    when a part's last failure is newer than its last success, or the database's success is
    more than 26 hours old."""
    state = tmp_path / "state"
    state.mkdir()
    now = int(time.time())

    def check(**parts: int) -> subprocess.CompletedProcess[str]:
        for name, at in parts.items():
            (state / name.replace("_", ".")).write_text(f"{at}\n")
        return subprocess.run(
            [ROOT / "deploy" / "backup-loop", "--check"],
            env={"PATH": os.environ["PATH"], "BACKUP_STATE_DIR": str(state)},
            capture_output=True,
            text=True,
            check=False,
        )

    assert check().returncode == 0
    assert check(database_success=now - 3600, repository_success=now - 60).returncode == 0
    failed = check(repository_failure=now - 30)
    assert failed.returncode == 1
    assert "repository.failure" in failed.stdout
    assert check(repository_success=now).returncode == 0
    stale = check(database_success=now - 27 * 3600)
    assert stale.returncode == 1
    assert "no database backup since" in stale.stdout
