"""The deployment: docker-compose.yml against the Compose Specification's JSON schema (vendored in
deploy/compose-spec.json) and the rules of docs/deploy.md, the Caddyfile, and scripts/backup +
scripts/restore against the test session's real PostgreSQL and S3.

There is no Docker engine here: nothing in this file starts a container. Where the `docker
compose` CLI or `caddy` is installed, their own validators run too (skipped otherwise)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema_rs
import pytest
import yaml

from goaltrack.config import get_settings
from goaltrack.dev.localstack import LocalStack, free_port
from helpers import Account, create_goal, wait_for_idle_worker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CADDYFILE = ROOT / "deploy" / "Caddyfile"
SCHEMA_FILE = ROOT / "deploy" / "compose-spec.json"
BACKUP = ROOT / "scripts" / "backup"
RESTORE = ROOT / "scripts" / "restore"

APP_SERVICES = ("migrate", "api-1", "api-2", "worker", "beat")
ENV_FILE_REFERENCE = "${GOALTRACK_ENV_FILE:-/etc/goaltrack/goaltrack.env}"
# What an operator's env file provides to the ${...} of the compose file.
DEPLOY_ENV = {
    "DOMAIN": "goaltrack.example.org",
    "ACME_EMAIL": "ops@example.org",
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "MINIO_ROOT_PASSWORD": "fedcba9876543210fedcba9876543210",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|^AI_API_KEY$")
REFERENCE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
STAMP = re.compile(r"goaltrack-(\d{8}T\d{6}Z)\.dump")


# --- docker-compose.yml ---------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves `<<:` merges
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load_compose()["services"]
    return found


def references(value: Any) -> list[tuple[str, str, str]]:
    """Every ${NAME[op arg]} in the document: (name, op, arg)."""
    if isinstance(value, dict):
        return [ref for key, item in value.items() for ref in references(key) + references(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in references(item)]
    if isinstance(value, str):
        return [
            (match["name"] or match["bare"], match["op"] or "", match["arg"] or "")
            for match in REFERENCE.finditer(value)
            if match[0] != "$$"
        ]
    return []


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution (${VAR}, ${VAR:-default}, ${VAR:?error}, $$)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"] or match["bare"], match["op"] or "", match["arg"] or ""
        current = env.get(name)
        missing = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return arg if missing else str(current)
        if op.endswith("?") and missing:
            raise KeyError(f"{name}: {arg}")
        if op.endswith("+"):
            return "" if missing else arg
        return current or ""

    return REFERENCE.sub(substitute, value)


def long_running(service: dict[str, Any]) -> bool:
    return service.get("restart") != "no"


def test_the_schema_is_the_vendored_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    assert (
        (ROOT / "deploy" / "compose-spec.LICENSE").read_text().lstrip().startswith("Apache License")
    )
    # The schema rejects what it should: an unknown key and a wrong type.
    validator = jsonschema_rs.validator_for(schema)
    assert not validator.is_valid({"services": {"api": {"image": "x", "restrat": "always"}}})
    assert not validator.is_valid({"services": {"api": {"image": "x", "ports": "8000"}}})
    assert validator.is_valid({"services": {"api": {"image": "x", "ports": ["8000:8000"]}}})


def test_compose_file_matches_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA_FILE.read_text()))
    raw = load_compose()
    for document in (raw, interpolate(raw, DEPLOY_ENV)):
        errors = [
            f"{error.instance_path}: {error.message}" for error in validator.iter_errors(document)
        ]
        assert errors == []


def test_compose_fails_fast_without_the_required_settings() -> None:
    raw = load_compose()
    for name in DEPLOY_ENV:
        with pytest.raises(KeyError, match=name):
            interpolate(raw, {key: value for key, value in DEPLOY_ENV.items() if key != name})


def compose_command() -> list[str] | None:
    if os.environ.get("COMPOSE_BIN"):
        return [os.environ["COMPOSE_BIN"]]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """`docker compose config` validates without an engine (COMPOSE_BIN=/path/to/docker-compose)."""
    command = compose_command()
    if command is None:
        pytest.skip("no docker compose CLI here (set COMPOSE_BIN to a docker-compose binary)")
    env_file = tmp_path / "goaltrack.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in DEPLOY_ENV.items()))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "GOALTRACK_ENV_FILE": str(env_file),
        **DEPLOY_ENV,
    }
    for profile in ([], ["--profile", "staging"]):
        result = subprocess.run(
            [
                *command,
                *("--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *profile),
                *("config", "--quiet"),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_only_caddy_publishes_ports() -> None:
    for name, service in services().items():
        assert service.get("network_mode") != "host", name
        ports = [str(port) for port in service.get("ports", [])]
        if name == "caddy":
            assert {"80:80", "443:443"} <= set(ports)
        else:
            # A staging-only helper may listen on the host's loopback (mailpit): nothing else.
            assert all(port.startswith("127.0.0.1:") for port in ports), name
            assert not ports or service.get("profiles") == ["staging"], name


def test_databases_are_on_an_internal_network_only() -> None:
    compose = load_compose()
    assert compose["networks"]["backend"] == {"internal": True}
    for name in ("postgres", "redis", "minio", "backup", "migrate", "beat"):
        assert compose["services"][name]["networks"] == ["backend"], name
    # Caddy reaches the API and MinIO through the internal network.
    assert set(compose["services"]["caddy"]["networks"]) == {"backend", "egress"}


def test_every_service_has_a_health_check() -> None:
    found = services()
    one_shots = {name for name, service in found.items() if not long_running(service)}
    assert one_shots == {"migrate"}
    for name, service in found.items():
        check = service.get("healthcheck")
        assert check, name
        if name in one_shots:
            # The image's own check is the API's: a one-shot turns it off explicitly.
            assert check == {"disable": True}
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            assert check.get("interval"), name
    for replica in ("api-1", "api-2"):
        api = " ".join(found[replica]["healthcheck"]["test"])
        assert "urllib" in api
        assert "http://127.0.0.1:8000/health/ready" in api  # the image has python, not curl
        assert found[replica]["healthcheck"]["start_interval"] == "1s"  # `up --wait` is quick
    assert "pg_isready" in " ".join(found["postgres"]["healthcheck"]["test"])
    assert found["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert found["minio"]["healthcheck"]["test"][1:] == ["mc", "ready", "local"]
    assert "127.0.0.1:2019" in " ".join(found["caddy"]["healthcheck"]["test"])
    assert "celerybeat-schedule" in " ".join(found["beat"]["healthcheck"]["test"])
    assert "control.ping" in " ".join(found["worker"]["healthcheck"]["test"])


def test_exactly_one_beat() -> None:
    beats = [
        name for name, service in services().items() if "beat" in (service.get("command") or [])
    ]
    assert beats == ["beat"]
    beat = services()["beat"]
    assert beat["command"] == ["goaltrack", "beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "profiles" not in beat
    # Its health check reads the schedule file `goaltrack beat` keeps in /app/.goaltrack, a
    # directory the image must give to its (non-root) user.
    from goaltrack.cli import DEV_DIR

    assert Path(".goaltrack") == DEV_DIR
    assert "/app/.goaltrack/celerybeat-schedule" in " ".join(beat["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile
    assert "install -d -o goaltrack -g goaltrack /app/.goaltrack" in dockerfile


def test_migrate_is_a_one_shot_that_the_app_waits_for() -> None:
    found = services()
    migrate = found["migrate"]
    assert migrate["command"] == ["goaltrack", "migrate"]
    assert migrate["restart"] == "no"
    for name in ("api-1", "api-2", "worker", "beat"):
        assert found[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert found[name]["restart"] == "unless-stopped"
    assert found["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_no_secret_value_in_the_compose_file() -> None:
    compose = load_compose()
    for name, op, arg in references(compose):
        if SECRET_NAME.search(name):
            assert "-" not in op, f"${{{name}{op}{arg}}}: a secret never has a default"
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), name
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), (name, key, value)
            # A URL's password is a reference too.
            userinfo = re.match(r"[a-z+]+://([^@/]*)@", str(value))
            if userinfo and ":" in userinfo[1]:
                assert userinfo[1].split(":", 1)[1].startswith("${"), (name, key)


def test_secrets_come_from_an_env_file_outside_the_repository() -> None:
    found = services()
    for name in APP_SERVICES:
        assert found[name]["env_file"] == ENV_FILE_REFERENCE, name
        assert found[name]["environment"]["APP_ENV"] == "production"
    default = Path(ENV_FILE_REFERENCE.split(":-", 1)[1].rstrip("}"))
    assert default.is_absolute()
    assert not default.is_relative_to(ROOT)
    others = [name for name, service in found.items() if "env_file" in service]
    assert sorted(others) == sorted(APP_SERVICES)  # postgres, minio, caddy get only what they need


def test_every_compose_variable_is_documented_in_env_example() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))
    used = {name for name, _, _ in references(load_compose())}
    assert used - documented == set()


def test_logs_rotate_and_services_restart_within_limits() -> None:
    for name, service in services().items():
        logging = service["logging"]
        assert logging["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= logging["options"].keys(), name
        if long_running(service):
            assert service["restart"] in ("unless-stopped", "always"), name
        if "profiles" not in service:
            assert service["deploy"]["resources"]["limits"]["memory"], name


def test_redis_is_a_durable_broker() -> None:
    command = services()["redis"]["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--appendonly"] == "yes"


def test_mailpit_only_under_the_staging_profile_on_loopback() -> None:
    mailpit = services()["mailpit"]
    assert mailpit["profiles"] == ["staging"]
    assert mailpit["ports"] == ["127.0.0.1:8025:8025"]


def test_backup_image_build_context_holds_what_it_copies() -> None:
    backup = services()["backup"]
    assert backup["build"] == {"context": ".", "dockerfile": "deploy/backup.Dockerfile"}
    dockerfile = (ROOT / "deploy" / "backup.Dockerfile").read_text()
    ignore = (ROOT / "deploy" / "backup.Dockerfile.dockerignore").read_text().split()
    copied = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert copied == ["scripts/backup", "scripts/restore", "deploy/backup-loop"]
    assert ignore[ignore.index("*") + 1 :] == [f"!{source}" for source in copied]
    for source in copied:
        assert os.access(ROOT / source, os.X_OK), source
    assert "FROM postgres:16-" in dockerfile  # pg_dump of the postgres service's major version
    assert services()["postgres"]["image"].startswith("postgres:16-")


# --- Caddy ----------------------------------------------------------------------------------


def test_caddy_serves_the_api_and_the_presigned_downloads() -> None:
    found = services()
    caddy = found["caddy"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert caddy["environment"]["DOMAIN"].startswith("${DOMAIN:?")
    # Presigned URLs are signed for the host Caddy proxies to MinIO.
    public = interpolate(found["api-1"]["environment"]["S3_PUBLIC_ENDPOINT_URL"], DEPLOY_ENV)
    assert public == "https://files.goaltrack.example.org"
    text = CADDYFILE.read_text()
    assert re.search(
        r"^\{\$DOMAIN\} \{.*?reverse_proxy api-1:8000 api-2:8000 \{", text, re.S | re.M
    )
    assert re.search(r"^files\.\{\$DOMAIN\} \{.*?reverse_proxy minio:9000", text, re.S | re.M)


def test_two_api_replicas_drain_before_caddys_health_check_misses_them() -> None:
    """A deploy restarts one replica at a time (scripts/rolling-restart; the behaviour is
    tests/test_rolling_restart.py's): a stopping replica fails its readiness for `--drain`
    seconds, long enough for Caddy's active check to see it twice, and Docker waits for the
    drain and uvicorn's graceful stop (20 s, `goaltrack serve`) before it kills."""
    found = services()
    assert found["api-1"] == found["api-2"]
    command = found["api-1"]["command"]
    assert command[command.index("--workers") + 1] == "1"  # the drain needs one process
    drain = float(command[command.index("--drain") + 1])
    text = CADDYFILE.read_text()
    interval = re.search(r"^\s+health_interval (\d+)s$", text, re.M)
    assert interval
    assert "health_uri /health/ready" in text
    assert re.search(r"^\s+lb_try_duration \d+s$", text, re.M)
    assert drain >= 2 * int(interval[1])
    grace = found["api-1"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > drain + 20


def test_caddy_adapts_the_caddyfile() -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed here (apt-get install caddy)")
    result = subprocess.run(
        [caddy, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile", "--validate"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **DEPLOY_ENV},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["email"] == (
        "ops@example.org"
    )
    upstreams: dict[str, str] = {}
    for route in config["apps"]["http"]["servers"]["srv0"]["routes"]:
        [host] = route["match"][0]["host"]
        dials = re.findall(r'"dial": "([^"]+)"', json.dumps(route, indent=1))
        upstreams[host] = ",".join(sorted(set(dials)))
    assert upstreams == {
        "goaltrack.example.org": "api-1:8000,api-2:8000",
        "files.goaltrack.example.org": "minio:9000",
    }


# --- Backups --------------------------------------------------------------------------------

FAKE_MC = r'''
"""Stands in for MinIO's `mc` (not installable here): `mc [--config-dir DIR] [--quiet] mirror
[--overwrite] [--remove] ALIAS/BUCKET DIR`, the alias from MC_HOST_<ALIAS>, against any S3 API."""
import json, os, sys, urllib.parse
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_MC_LOG"], "a") as log:
    log.write(json.dumps({"argv": args, "mc_host": os.environ.get("MC_HOST_goaltrack")}) + "\n")
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag == "--config-dir":
        args.pop(0)
    elif flag != "--quiet":
        sys.exit(f"fake mc: unknown global flag {flag}")
if not args or args.pop(0) != "mirror":
    sys.exit("fake mc: only `mirror` is implemented")
flags = {arg for arg in args if arg.startswith("-")}
if not flags <= {"--overwrite", "--remove"}:
    sys.exit(f"fake mc: unknown flags {flags}")
source, target = [arg for arg in args if not arg.startswith("-")]
if os.environ.get("FAKE_MC_OFFLINE"):
    sys.exit(0)

import boto3
from botocore.config import Config

alias, _, bucket = source.partition("/")
url = urllib.parse.urlsplit(os.environ["MC_HOST_" + alias])
s3 = boto3.client(
    "s3",
    endpoint_url=f"{url.scheme}://{url.hostname}:{url.port}",
    aws_access_key_id=urllib.parse.unquote(url.username),
    aws_secret_access_key=urllib.parse.unquote(url.password),
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}),
)
keys = set()
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for item in page.get("Contents", []):
        keys.add(item["Key"])
        path = Path(target, item["Key"])
        if path.exists() and "--overwrite" not in flags:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part.minio")
        part.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        part.replace(path)  # a new file, as mc writes: hard-linked snapshots keep the old one
if "--remove" in flags:
    for path in list(Path(target).rglob("*")):
        if path.is_file() and path.relative_to(target).as_posix() not in keys:
            path.unlink()
'''


def postgres_bin() -> Path:
    """The client tools next to the server the test session runs (the localstack's choice)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
    )
    if not candidates:
        pytest.skip("PostgreSQL client tools are not installed")
    return candidates[-1].parent


def libpq_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture
def script_env(tmp_path: Path) -> dict[str, str]:
    """The scripts' environment: PostgreSQL's client tools and the fake `mc` on PATH."""
    tools = tmp_path / "bin"
    tools.mkdir()
    mc = tools / "mc"
    mc.write_text(f"#!{sys.executable}\n{FAKE_MC}")
    mc.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    return env | {
        "PATH": f"{postgres_bin()}:{tools}:{os.environ['PATH']}",
        "BACKUP_DIR": str(tmp_path / "backups"),
        "BACKUP_RETENTION_DAYS": "7",
        "S3_BUCKET": get_settings().s3_bucket,
        "FAKE_MC_LOG": str(tmp_path / "mc.log"),
    }


async def run(*command: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(part) for part in command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def table_counts(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(libpq_url(url))
    try:
        names = [
            row[0]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        # Table names from the catalogue, quoted.
        return {
            name: await connection.fetchval(f'SELECT count(*) FROM "{name}"')  # noqa: S608
            for name in names
        }
    finally:
        await connection.close()


async def settled_counts(url: str, redis: Any) -> dict[str, int]:
    """Row counts once the worker's tasks for the requests above have run (it is idle)."""
    await wait_for_idle_worker(redis)
    return await table_counts(url)


async def drop_database(stack: LocalStack, name: str) -> None:
    connection = await asyncpg.connect(libpq_url(stack.postgres.url_for("postgres")))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def stamp_days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y%m%dT%H%M%SZ")


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def mc_calls(env: dict[str, str]) -> list[dict[str, Any]]:
    log = Path(env["FAKE_MC_LOG"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def seed_earlier_runs(backups: Path, *stamps: str) -> None:
    """Dumps and object snapshots of earlier runs, and a file of the operator's."""
    (backups / "postgres").mkdir(parents=True)
    for stamp in stamps:
        (backups / "postgres" / f"goaltrack-{stamp}.dump").write_bytes(b"old")
        (backups / "objects" / stamp).mkdir(parents=True)
    (backups / "postgres" / "README").write_text("not a dump")


def check_backup_files(
    env: dict[str, str], printed: str, key: str, content: bytes, kept: str
) -> Path:
    """The dump, the bucket's copy and the retention after a run; returns the dump."""
    backups = Path(env["BACKUP_DIR"])
    dump = Path(printed.strip())
    stamp_match = STAMP.fullmatch(dump.name)
    assert stamp_match
    stamp = stamp_match[1]
    assert dump.parent == backups / "postgres"
    assert dump.stat().st_mode & 0o777 == 0o600  # password hashes and personal data

    # The bucket: mirrored with the credentials from MC_HOST_goaltrack (never on a command line),
    # and a dated snapshot of hard links.
    [call] = mc_calls(env)
    assert call["argv"][-5:] == [
        "mirror",
        "--overwrite",
        "--remove",
        f"goaltrack/{env['S3_BUCKET']}",
        str(backups / "objects" / "latest"),
    ]
    assert env["S3_SECRET_ACCESS_KEY"] not in " ".join(call["argv"])
    copy = backups / "objects" / stamp / key
    assert copy.read_bytes() == content
    assert copy.stat().st_ino == (backups / "objects" / "latest" / key).stat().st_ino

    # Retention (7 days): what is older went, the rest stayed.
    assert names(backups / "postgres") == sorted(["README", f"goaltrack-{kept}.dump", dump.name])
    assert names(backups / "objects") == sorted(["latest", kept, stamp])
    return dump


async def test_backup_then_restore_into_a_fresh_database(
    client: Any, app: Any, stack: LocalStack, register: Any, script_env: dict[str, str]
) -> None:
    account: Account = await register(password="restored horse battery")
    goal = await create_goal(client, account, title="Survive a restore")
    for title in ("Back up", "Restore"):
        response = await client.post(
            f"/goals/{goal['id']}/stages", json={"title": title}, headers=account.headers
        )
        assert response.status_code == 201, response.text
    await create_goal(client, account, title="Second goal")
    key = f"deploy-test/{uuid.uuid4()}.bin"
    content = os.urandom(2048)
    await app.state.storage.client.put_object(Bucket=script_env["S3_BUCKET"], Key=key, Body=content)
    expired, kept = stamp_days_ago(8), stamp_days_ago(6)
    seed_earlier_runs(Path(script_env["BACKUP_DIR"]), expired, kept)

    source = stack.postgres.url
    before = await settled_counts(source, app.state.redis)
    assert before["users"] == 1
    assert before["goals"] == 2
    assert before["goal_stages"] == 2

    result = await run(BACKUP, source, env=script_env)
    assert result.returncode == 0, result.stderr
    assert await table_counts(source) == before, "the worker changed rows during the backup"
    dump = check_backup_files(script_env, result.stdout, key, content, kept)

    name = f"restored_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(stack.postgres.create_database, name)
    target = stack.postgres.url_for(name)
    try:
        result = await run(RESTORE, dump, target, env=script_env)
        assert result.returncode == 0, result.stderr
        assert await table_counts(target) == before

        # A database with tables is refused, unless --force (then restored over, the same).
        result = await run(RESTORE, dump, target, env=script_env)
        assert result.returncode != 0
        assert "already has" in result.stderr
        result = await run(RESTORE, "--force", dump, target, env=script_env)
        assert result.returncode == 0, result.stderr
        assert await table_counts(target) == before

        await assert_login_works_against(target, account, goal_titles={"Survive a restore"})
    finally:
        await drop_database(stack, name)


async def assert_login_works_against(url: str, account: Account, goal_titles: set[str]) -> None:
    """The application itself, run against the restored database: the password still logs in."""
    from goaltrack.main import create_app

    restored = create_app(get_settings().model_copy(update={"database_url": url}))
    async with restored.router.lifespan_context(restored):
        transport = httpx.ASGITransport(app=restored)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            wrong = await http.post(
                "/auth/login", json={"email": account.email, "password": "not the password"}
            )
            assert wrong.status_code == 401
            login = await http.post(
                "/auth/login", json={"email": account.email, "password": account.password}
            )
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            goals = await http.get("/goals", headers={"Authorization": f"Bearer {token}"})
            assert goals.status_code == 200, goals.text
            assert goal_titles <= {item["title"] for item in goals.json()["items"]}


async def test_a_failed_backup_leaves_no_dump_and_deletes_nothing(
    script_env: dict[str, str],
) -> None:
    backups = Path(script_env["BACKUP_DIR"])
    old = stamp_days_ago(30)
    seed_earlier_runs(backups, old)
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/goaltrack"
    result = await run(BACKUP, unreachable, env=script_env)
    assert result.returncode != 0
    assert "pg_dump failed" in result.stderr
    assert names(backups / "postgres") == ["README", f"goaltrack-{old}.dump"]
    assert names(backups / "objects") == [old]
    assert mc_calls(script_env) == []  # the objects were not touched either


async def test_backup_passes_odd_s3_credentials_intact(
    stack: LocalStack, script_env: dict[str, str]
) -> None:
    secret = "p@ss/w:rd+%?#&= x"
    env = script_env | {"S3_SECRET_ACCESS_KEY": secret, "FAKE_MC_OFFLINE": "1"}
    result = await run(BACKUP, stack.postgres.url, env=env)
    assert result.returncode == 0, result.stderr
    [call] = mc_calls(env)
    url = urllib.parse.urlsplit(call["mc_host"])
    assert urllib.parse.unquote(url.password or "") == secret
    assert urllib.parse.unquote(url.username or "") == env["S3_ACCESS_KEY_ID"]
    assert f"{url.scheme}://{url.hostname}:{url.port}" == env["S3_ENDPOINT_URL"]
    assert secret not in " ".join(call["argv"])


async def test_backup_refuses_a_retention_below_one_day(
    stack: LocalStack, script_env: dict[str, str]
) -> None:
    result = await run(BACKUP, stack.postgres.url, env=script_env | {"BACKUP_RETENTION_DAYS": "0"})
    assert result.returncode != 0
    assert "BACKUP_RETENTION_DAYS" in result.stderr
    assert names(Path(script_env["BACKUP_DIR"]).parent) == ["bin"]  # nothing written
