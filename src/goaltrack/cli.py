"""The `goaltrack` command: migrate, serve, worker, beat, health (the containers' checks), and
`dev` (everything, zero configuration)."""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
import signal
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from goaltrack.config import Settings

app = typer.Typer(help="Goaltrack backend.", no_args_is_help=True, add_completion=False)

DEV_DIR = Path(".goaltrack")
BEAT_SCHEDULE = DEV_DIR / "celerybeat-schedule"


def _logging_config(settings: Settings | None = None) -> dict[str, Any]:
    """LOG_FORMAT (text in development, json in production), with the request id and the task
    on every record (goaltrack.observability.logs)."""
    from goaltrack.config import Settings
    from goaltrack.observability.logs import logging_config, resolve_log_format

    # Not get_settings(): `dev` changes the environment after this, and that one is cached.
    return logging_config(resolve_log_format(settings or Settings()))


def _configure_logging(settings: Settings | None = None) -> None:
    logging.config.dictConfig(_logging_config(settings))


@app.command()
def migrate() -> None:
    """Apply every database migration (alembic upgrade head)."""
    from goaltrack.config import SettingsWithoutUserSecrets
    from goaltrack.migrations import upgrade

    _configure_logging(SettingsWithoutUserSecrets())
    upgrade()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    drain: Annotated[
        float,
        typer.Option(
            help="On SIGTERM, seconds of 503 from /health/ready before the graceful stop, for a "
            "proxy's health check to take this process out (one worker process only)."
        ),
    ] = 0.0,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from goaltrack.serving import DrainingServer

    options: dict[str, Any] = {
        "app": "goaltrack.main:create_app",
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": "httptools",
        "proxy_headers": False,
        "access_log": False,
        "log_config": _logging_config(),  # applied by uvicorn in each worker process
        "server_header": False,  # no "server: uvicorn"
        # In-flight requests get this long after the drain; docker's stop_grace_period is longer.
        "timeout_graceful_shutdown": 20,
    }
    if workers > 1:  # uvicorn's supervisor, which does not drain
        if drain:
            raise typer.BadParameter("--drain needs --workers 1 (a replica per process)")
        uvicorn.run(**options)
        return
    server = DrainingServer(uvicorn.Config(**options), drain=drain)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's own exit code for a failed start-up


def _celery(settings: Settings, *args: str) -> None:
    from goaltrack.celery_app import create_celery

    _configure_logging(settings)  # Celery leaves a configured root logger alone
    create_celery(settings).start(argv=list(args))


@app.command()
def worker(concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 2) -> None:
    """Run a Celery worker."""
    from goaltrack.config import get_settings

    _celery(
        get_settings(),
        "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        "--without-mingle",
        "--without-gossip",
    )


@app.command()
def beat() -> None:
    """Run Celery beat (one per deployment; a second is safe, its jobs claiming rows with SKIP
    LOCKED, but doubles the ticks): it only ticks; PostgreSQL holds the schedule."""
    from goaltrack.config import SettingsWithoutUserSecrets

    DEV_DIR.mkdir(exist_ok=True)
    _celery(SettingsWithoutUserSecrets(), "beat", "--loglevel=INFO", f"--schedule={BEAT_SCHEDULE}")


class HealthRole(StrEnum):
    API = "api"
    WORKER = "worker"
    BEAT = "beat"


@app.command()
def health(
    role: Annotated[HealthRole, typer.Argument(help="Which process this container runs.")],
    port: Annotated[int, typer.Option(help="The API's port.")] = 8000,
    max_age: Annotated[float, typer.Option(help="Beat: seconds its heartbeat may age.")] = 300,
    grace: Annotated[float, typer.Option(help="Seconds after start that never count.")] = 60,
    pid: Annotated[int, typer.Option(hidden=True)] = 1,
) -> None:
    """The container's health check (exit 1 = unhealthy); ends a process stuck 3 checks in a row
    so that its restart policy restarts it (goaltrack.healthcheck)."""
    from goaltrack import healthcheck

    if role is HealthRole.API:
        verdict = healthcheck.check_api(port)
    else:
        from goaltrack.config import SettingsWithoutUserSecrets
        from goaltrack.observability.beat import heartbeat_path

        # The beat container has no user secret to check (docker-compose.yml).
        redis_url = SettingsWithoutUserSecrets().redis_url
        verdict = (
            healthcheck.check_worker(redis_url)
            if role is HealthRole.WORKER
            else healthcheck.check_beat(redis_url, heartbeat_path(BEAT_SCHEDULE), max_age)
        )
    stuck = healthcheck.heal(verdict, role=role.value, pid=pid, grace=grace)
    if verdict is not healthcheck.Health.OK:
        typer.echo(f"{role.value}: {verdict.value} ({stuck} stuck in a row)", err=True)
        raise typer.Exit(1)


@app.command()
def dev(port: Annotated[int, typer.Option(help="API port.")] = 8000) -> None:
    """Start local PostgreSQL, Redis and S3, migrate, and run API + worker + beat. Ctrl-C stops all."""
    from goaltrack.dev.localstack import LocalStackError, running
    from goaltrack.migrations import upgrade

    _configure_logging()
    # `kill` stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as cleanup:
        try:
            stack = cleanup.enter_context(running(DEV_DIR.resolve()))
        except LocalStackError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc
        env = {
            **os.environ,
            **stack.env(),
            "APP_ENV": os.environ.get("APP_ENV", "development"),
            # The reset mail links to this server's own page.
            "PASSWORD_RESET_URL": os.environ.get(
                "PASSWORD_RESET_URL", f"http://127.0.0.1:{port}/reset-password?token={{token}}"
            ),
        }
        os.environ.update(env)
        upgrade(stack.postgres.url)
        goaltrack = [sys.executable, "-m", "goaltrack"]
        children = [
            subprocess.Popen([*goaltrack, *command], env=env)
            for command in (
                ["serve", "--port", str(port)],
                ["worker", "--concurrency", "1"],
                ["beat"],
            )
        ]
        cleanup.callback(_stop_children, children)
        typer.secho(
            f"Goaltrack: http://127.0.0.1:{port}/docs  (Ctrl-C stops everything)",
            fg=typer.colors.GREEN,
        )
        mail = env.get("MAIL_SERVER")
        typer.echo(
            f"mail: SMTP {mail}" if mail else "mail: printed to this log (set MAIL_SERVER to send)"
        )
        typer.echo(
            "push: FCM project from " + env["FCM_CREDENTIALS_FILE"]
            if env.get("FCM_CREDENTIALS_FILE")
            else "push: off (set FCM_CREDENTIALS_FILE; the feed works without it)"
        )
        typer.echo(
            "AI plans: " + env.get("AI_BASE_URL", "https://api.deepseek.com")
            if env.get("AI_API_KEY")
            else "AI plans: off, 503 ai_unavailable (set AI_API_KEY)"
        )
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            typer.echo("stopping...")


@app.command()
def cluster(port: Annotated[int, typer.Option(help="The balancer's port.")] = 8000) -> None:
    """Several nodes on this machine: PostgreSQL primary + replica, PgBouncer, Redis, S3, two API
    processes behind Caddy, two workers and two beats (docs/deploy.md). Ctrl-C stops all."""
    from goaltrack.dev.cluster import Cluster
    from goaltrack.dev.localstack import LocalStackError
    from goaltrack.migrations import upgrade

    _configure_logging()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    nodes = Cluster(
        (DEV_DIR / "cluster").resolve(),
        port=port,
        settings={"APP_ENV": os.environ.get("APP_ENV", "development")},
    )
    try:
        nodes.start_services()
        upgrade(nodes.primary_url)
        nodes.start_nodes()
    except LocalStackError as exc:
        nodes.stop()
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    try:
        typer.secho(
            f"Goaltrack cluster: {nodes.url} (Caddy over {len(nodes.apis)} API nodes); logs under "
            f"{nodes.root}. Ctrl-C stops everything.",
            fg=typer.colors.GREEN,
        )
        while all(node.process is None or node.process.poll() is None for node in nodes.apis):
            time.sleep(0.5)
    except KeyboardInterrupt:
        typer.echo("stopping...")
    finally:
        # A second Ctrl-C or SIGTERM must not cut the stop short (PostgreSQL would be left running).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        nodes.stop()


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """A terminal's Ctrl-C has reached the children too; anything else gets SIGTERM (a graceful
    stop for uvicorn and Celery), and whatever is still running after `timeout` is killed."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
