"""Redis for the rate limiter, the caches and the broker: REDIS_URL's server, or the master the
Sentinels (REDIS_SENTINELS) name, found again after a failover.

With Sentinel, REDIS_URL gives the password (the master's and the Sentinels') and the database.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from goaltrack.config import Settings


def create_redis(settings: Settings, *, timeout: float) -> Redis:
    """A client whose commands fail (RedisError) after `timeout` seconds without an answer."""
    if not settings.redis_sentinel_addresses:
        return Redis.from_url(
            settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    options = parse_url(settings.redis_url)
    password = options.get("password")
    timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_addresses,
        sentinel_kwargs={"password": password, **timeouts},
        password=password,
        db=options.get("db", 0),
        **timeouts,
    )
    master: Redis = sentinel.master_for(settings.redis_sentinel_master)
    return master


def broker_url(settings: Settings) -> str:
    """Celery's broker: REDIS_URL, or kombu's `sentinel://` list (with `broker_options`)."""
    if not settings.redis_sentinel_addresses:
        return settings.redis_url
    options = parse_url(settings.redis_url)
    password = options.get("password")
    auth = f":{quote(password, safe='')}@" if password else ""
    return ";".join(
        f"sentinel://{auth}{host}:{port}/{options.get('db', 0)}"
        for host, port in settings.redis_sentinel_addresses
    )


def broker_options(settings: Settings) -> dict[str, Any]:
    """kombu's transport options for the Sentinels: the master's name, their password."""
    if not settings.redis_sentinel_addresses:
        return {}
    password = parse_url(settings.redis_url).get("password")
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": {"password": password} if password else {},
    }
