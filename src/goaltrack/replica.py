"""Hot reads from a streaming replica (DATABASE_REPLICA_URL), without stale reads for the writer.

The rule: a hot read runs on the replica only when the replica is known to hold everything the
caller may have written or been given; otherwise on the primary.

- Each API process samples, every POLL_SECONDS, the primary's WAL insert position and then the
  replica's replay position. A primary position the replica has replayed is a moment by which
  every commit is on the replica (`caught_up_at`).
- A write (any request but GET/HEAD/OPTIONS whose transaction committed) leaves the caller's
  *floor* in Redis: the primary's WAL insert position right after the commit, which is past the
  commit record. Kept FLOOR_TTL, raised and never lowered (two nodes may record at once).
- A hot read uses the replica when: the last sample succeeded; the replica has caught up within
  FLOOR_TTL (else a floor may have expired while the replica lagged); the caller's access token
  was issued before `caught_up_at` (a new login, registration or refresh has its session on the
  primary first: none of them needs a floor); and the caller's floor, if any, has been replayed.
- Anything unknown means the primary: Redis unreachable, the replica not answering (its read is
  run again on the primary, never a 5xx), a replica that is not a standby.

Why Redis and not a signed cookie or header: the app's clients send bearer tokens and keep no
cookies, a header would have to be echoed by every client version, and a floor in Redis also
covers the user's other devices and every API node at once. Its price is one Redis GET per hot
read and a round trip plus a Redis call per write, only when a replica is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from goaltrack.reads import DRIVER_CONNECTION_ERRORS, PoolReader, PreparedStatement

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
SAMPLE_TIMEOUT_SECONDS = 1.0
# A hot read asks Redis for the caller's floor at most this long; after a failure the reads go to
# the primary without asking for REDIS_BACKOFF_SECONDS (a hung Redis must not slow every read).
FLOOR_TIMEOUT_SECONDS = 0.25
REDIS_BACKOFF_SECONDS = 1.0
# A read the replica fails this way is run again on the primary: the replica is down, starting,
# or cancelled the statement for a conflict with recovery.
REPLICA_FAILURES: tuple[type[BaseException], ...] = (
    *DRIVER_CONNECTION_ERRORS,
    OSError,
    TimeoutError,
    asyncpg.exceptions.SerializationError,
)
# Positions as numbers (bytes since 0/0): pg_lsn has no asyncpg codec.
PRIMARY_POSITION = "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"
REPLAYED_POSITION = "SELECT (pg_last_wal_replay_lsn() - '0/0')::bigint"
FLOOR_KEY = "replica:floor:{}"
_RAISE_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
"""


class ReplicaReader(PoolReader):
    """A route's hot read on the replica when the rule above allows it, else on the primary
    (`pool`, the read pool of PoolReader). `start()` begins the sampling, `close()` ends it."""

    def __init__(
        self, primary: asyncpg.Pool, replica: asyncpg.Pool, redis: Redis, *, floor_ttl: int
    ) -> None:
        super().__init__(primary)
        self.replica = replica
        self._replica_reads = PoolReader(replica)
        self.redis = redis
        self.floor_ttl = floor_ttl
        self._raise_floor = redis.register_script(_RAISE_FLOOR)
        # The replica's last replayed position (None: not known to be a serving standby), and
        # the wall time by which every commit is on it.
        self.replayed: int | None = None
        self.caught_up_at = 0.0
        self._unconfirmed: deque[tuple[float, int]] = deque(
            maxlen=int(floor_ttl / POLL_SECONDS) + 1
        )
        self._sampling: asyncio.Task[None] | None = None
        self._redis_failed_at = float("-inf")

    def start(self) -> None:
        self._sampling = asyncio.create_task(self._sample_forever(), name="replica-sampling")

    async def close(self) -> None:
        """Ends the sampling and closes the replica's pool (the primary's is the caller's)."""
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
        await self.replica.close()

    async def fetch(self, statement: PreparedStatement, params: Mapping[str, Any]) -> list[Any]:
        if await self._replica_serves(params):
            try:
                return await self._replica_reads.fetch(statement, params)
            except REPLICA_FAILURES as exc:
                logger.warning(
                    "replica read failed (%s): read from the primary", type(exc).__name__
                )
                self.replayed = None  # until a sample finds it serving again
        return await super().fetch(statement, params)

    async def remember_write(self, user_id: uuid.UUID) -> None:
        """After a write by `user_id` committed: their floor, the primary's position now."""
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_SECONDS):
                position = await self.pool.fetchval(PRIMARY_POSITION)
                await self._raise_floor(
                    keys=[FLOOR_KEY.format(user_id)], args=[position, self.floor_ttl]
                )
        except (RedisError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
            # The write stands; this user's next reads within the replica's lag may miss it.
            logger.warning("could not record a write's position: %s", type(exc).__name__)

    async def _replica_serves(self, params: Mapping[str, Any]) -> bool:
        replayed, caught_up_at = self.replayed, self.caught_up_at
        if replayed is None or caught_up_at < time.time() - self.floor_ttl:
            return False
        issued_at = params.get("issued_at")
        if issued_at is not None and issued_at + 1 > caught_up_at:  # iat is whole seconds
            return False
        user_id = params.get("user_id")
        if user_id is None:
            return True
        if time.monotonic() - self._redis_failed_at < REDIS_BACKOFF_SECONDS:
            return False
        try:
            async with asyncio.timeout(FLOOR_TIMEOUT_SECONDS):
                floor = await self.redis.get(FLOOR_KEY.format(user_id))
        except (RedisError, TimeoutError):
            self._redis_failed_at = time.monotonic()
            return False
        return floor is None or int(floor) <= replayed

    async def _sample_forever(self) -> None:
        while True:
            await self._sample()
            await asyncio.sleep(POLL_SECONDS)

    async def _sample(self) -> None:
        sampled_at = time.time()
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_SECONDS):
                position = await self.pool.fetchval(PRIMARY_POSITION)
        except (*REPLICA_FAILURES, asyncpg.PostgresError):
            return  # the primary is in trouble: its own reads will say so
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_SECONDS):
                replayed = await self.replica.fetchval(REPLAYED_POSITION)
        except (*REPLICA_FAILURES, asyncpg.PostgresError) as exc:
            if self.replayed is not None:
                logger.warning("replica unavailable (%s): hot reads on the primary", exc)
            self.replayed = None
            return
        self._unconfirmed.append((sampled_at, position))
        if replayed is None:  # not a standby (promoted, or misconfigured): never trusted
            self.replayed = None
            return
        while self._unconfirmed and self._unconfirmed[0][1] <= replayed:
            self.caught_up_at = self._unconfirmed.popleft()[0]
        self.replayed = replayed
