"""Fixed-window rate limits in Redis.

While Redis does not answer (a Sentinel failover takes seconds; a managed Redis's a minute), each
process counts the limits in its own memory for at most RATE_LIMIT_LOCAL_FALLBACK_SECONDS from
the first failure, and then fails closed: the limited action is refused (503) until Redis is
back. The bounded window keeps sign-in working through a failover while an attacker gains at
most (API processes) x the limit for that long; an outage longer than that is not a failover.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from goaltrack.clock import utcnow
from goaltrack.config import RateLimit, Settings
from goaltrack.errors import RateLimited, ServiceUnavailable

logger = logging.getLogger(__name__)

# INCR, set the window on the first hit, and report the count with the window's remaining time.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('TTL', KEYS[1])}
"""


# Keys a process counts at most while Redis is away (then it starts over: a flood of distinct
# identities must not grow the process without bound).
LOCAL_KEYS = 100_000


class RateLimiter:
    def __init__(self, redis: Redis, *, local_fallback_seconds: int) -> None:
        self._redis = redis
        self._hit = redis.register_script(_HIT)
        self._fallback_seconds = local_fallback_seconds
        self._failing_since: float | None = None
        self._local: dict[str, tuple[int, float]] = {}  # key -> (count, window's end)

    async def hit(self, scope: str, identity: str, limit: RateLimit) -> None:
        # Hash the identity: e-mail addresses and IPs do not belong in Redis key listings.
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        key = f"ratelimit:{scope}:{digest}"
        try:
            count, ttl = await self._hit(keys=[key], args=[limit.window_seconds])
        except RedisError as exc:
            count, ttl = self._hit_locally(key, limit, exc)
        else:
            if self._failing_since is not None:
                logger.warning("rate limiter: Redis is back")
                self._failing_since = None
                self._local.clear()
        if int(count) > limit.count:
            raise RateLimited(retry_after=max(int(ttl), 1))

    def _hit_locally(self, key: str, limit: RateLimit, exc: RedisError) -> tuple[int, float]:
        now = utcnow().timestamp()
        if self._failing_since is None:
            logger.warning("rate limiter: Redis unavailable (%s), counting locally", exc)
            self._failing_since = now
        if now - self._failing_since >= self._fallback_seconds:
            logger.warning("rate limiter unavailable: %s", type(exc).__name__)
            raise ServiceUnavailable("Rate limiting is unavailable; try again later.") from exc
        count, ends = self._local.get(key, (0, now + limit.window_seconds))
        if ends <= now:
            count, ends = 0, now + limit.window_seconds
        if len(self._local) >= LOCAL_KEYS:
            self._local.clear()
        self._local[key] = (count + 1, ends)
        return count + 1, ends - now


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]


def client_ip(request: Request) -> str:
    """The client's address: behind TRUSTED_PROXY_HOPS proxies, the one the outermost of them saw
    (middleware.TrustedProxies has put it in the request's scope)."""
    return request.client.host if request.client else "unknown"


async def limit_login_attempts(
    limiter: RateLimiter, request: Request, settings: Settings, email: str
) -> None:
    """Password guesses, per e-mail and client IP (login and account restore share the budget),
    and per client IP whatever the e-mail (password spraying)."""
    ip = await limit_sign_ins_from_ip(limiter, request, settings)
    await limiter.hit("login", f"{email}|{ip}", settings.login_limit)


async def limit_sign_ins_from_ip(limiter: RateLimiter, request: Request, settings: Settings) -> str:
    """Every sign-in from one client IP, with a password or an ID token: one budget. The IP."""
    ip = client_ip(request)
    await limiter.hit("login-ip", ip, settings.login_ip_limit)
    return ip


async def limit_reset_mails(
    limiter: RateLimiter, request: Request, settings: Settings, email: str
) -> None:
    """Password-reset mails (the API's forgot-password and the reset page's "send a new link"),
    per client IP whatever the address, and per address."""
    await limiter.hit("forgot-ip", client_ip(request), settings.forgot_ip_limit)
    await limiter.hit("forgot", email, settings.forgot_limit)


async def limit_password_checks(limiter: RateLimiter, settings: Settings, user_id: str) -> None:
    """Guesses of the current password with a stolen access token (change, delete, delete data)."""
    await limiter.hit("password-check", user_id, settings.password_check_limit)
