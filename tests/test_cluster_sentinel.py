"""Redis is not a single point of failure: a password, and a master watched by a real Sentinel
(redis-server --sentinel) that promotes its replica when the master dies. The rate limiter and
the broker find the new master through the Sentinel; logins go on through the failover (the
limiter counts locally meanwhile, ratelimit.py)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from goaltrack.celery_app import create_celery
from goaltrack.config import Settings, get_settings
from goaltrack.dev.localstack import LocalStack, RedisSentinel, RedisServer
from goaltrack.main import create_app
from helpers import wait_until

pytestmark = pytest.mark.cluster


@dataclass
class Watched:
    master: RedisServer
    replica: RedisServer
    sentinel: RedisSentinel
    password: str

    def client(self, server: RedisServer) -> Redis:
        return Redis.from_url(server.url)

    async def ask_sentinel(self, *command: str) -> object:
        sentinel = Redis(port=self.sentinel.port, password=self.password)
        try:
            return await sentinel.execute_command("SENTINEL", *command)
        finally:
            await sentinel.aclose()

    async def master_port(self) -> int:
        name = self.sentinel.master_name
        host_port = await self.ask_sentinel("get-master-addr-by-name", name)
        assert isinstance(host_port, list)
        return int(host_port[1])

    async def replicated(self) -> None:
        """Until the replica has synced with the master and the Sentinel knows it."""

        async def ready() -> bool:
            replica = self.client(self.replica)
            try:
                info = await replica.info("replication")
            finally:
                await replica.aclose()
            known = await self.ask_sentinel("replicas", self.sentinel.master_name)
            return info.get("master_link_status") == "up" and bool(known)

        await wait_until(ready, timeout=30, interval=0.2)


@pytest.fixture
def watched(stack: LocalStack) -> Iterator[Watched]:
    root = stack.root / f"sentinel-{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(12)
    master = RedisServer(root / "master", password=password)
    master.start()
    replica = RedisServer(root / "replica", password=password, replica_of=master.port)
    sentinel = RedisSentinel(root / "sentinel", master.port, password=password)
    try:
        replica.start()
        sentinel.start()
        yield Watched(master, replica, sentinel, password)
    finally:
        for server in (sentinel, replica, master):
            server.stop(discard=True)


def through_sentinel(watched: Watched) -> Settings:
    # REDIS_URL's host is not used with Sentinel: its password and database are.
    return get_settings().model_copy(
        update={
            "redis_url": f"redis://:{watched.password}@unused:6379/0",
            "redis_sentinels": f"127.0.0.1:{watched.sentinel.port}",
        }
    )


@pytest.fixture
async def app_through_sentinel(watched: Watched) -> AsyncIterator[FastAPI]:
    application = create_app(through_sentinel(watched))
    async with application.router.lifespan_context(application):
        yield application


async def rate_limit_keys(client: Redis) -> int:
    return len([key async for key in client.scan_iter("ratelimit:login:*")])


@pytest.mark.timeout(120)
async def test_logins_and_tasks_go_on_through_a_sentinel_failover(
    watched: Watched, app_through_sentinel: FastAPI
) -> None:
    transport = httpx.ASGITransport(app=app_through_sentinel)
    publisher = create_celery(through_sentinel(watched))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

        async def login(email: str) -> int:
            body = {"email": email, "password": "wrong password"}
            return (await http.post("/auth/login", json=body)).status_code

        # Without the password the master answers nothing.
        anonymous = Redis(port=watched.master.port)
        with pytest.raises(Exception, match=r"(?i)auth"):
            await anonymous.ping()
        await anonymous.aclose()

        await watched.replicated()
        master, replica = watched.client(watched.master), watched.client(watched.replica)
        assert await login("before@example.com") == 401
        assert await rate_limit_keys(master) == 1
        publisher.send_task("goaltrack.noop.before")
        assert await master.llen("celery") == 1

        watched.master.stop(discard=True)  # SIGKILL: the master is gone
        # At once, before or while the Sentinel promotes the replica: no 503.
        assert await login("during@example.com") == 401

        async def promoted() -> bool:
            return await watched.master_port() == watched.replica.port

        await wait_until(promoted, timeout=60, interval=0.2)

        async def limited_in_the_new_master() -> bool:
            await login("after@example.com")
            return await rate_limit_keys(replica) >= 2  # "before" came over by replication

        await wait_until(limited_in_the_new_master, timeout=30, interval=0.5)
        queued = await replica.llen("celery")
        publisher.send_task(
            "goaltrack.noop.after",
            retry=True,
            retry_policy={"max_retries": 5, "interval_start": 0.5},
        )
        assert await replica.llen("celery") == queued + 1
        await master.aclose()
        await replica.aclose()
