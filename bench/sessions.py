"""The tokens a run sends, as phones send them: each access token for REQUESTS_PER_TOKEN requests
(a session's first request verifies it, the others find it in the app's verified-token cache),
then the session's next token. Every run (its warm-up too) mints tokens no app has seen, so each
run's cache hit rate is the one users give a worker, 1 - 1 / REQUESTS_PER_TOKEN, however long the
bench has been running and however many users a scenario walks.

The walk goes block by block: a block is BLOCK_SESSIONS sessions, each sending its requests one
pass of the block apart, so that no two requests of a session are in flight together (wrk keeps
64) and a write (a stage toggled again and again) never waits on its own previous request's lock.
A stage toggle alternates its two paths along its session's requests (an even number: the stage
ends as it began)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import jwt

from bench.scenarios import Entry
from goaltrack.auth.security import ACCESS_TOKEN_TYPE, JWT_ALGORITHM
from goaltrack.config import Settings

# A phone opening the app sends about this many requests with one token (sync, the goals, a
# goal, the feed, the achievements, a change or two); the token then lives on for 30 minutes.
REQUESTS_PER_TOKEN = 8
BLOCK_SESSIONS = 128  # twice wrk's connections
# More requests a second than any app serves here: a run never walks past its last session.
MAX_REQUESTS_PER_SECOND = 8_000


@dataclass
class SessionTokens:
    settings: Settings
    _walks: int = 0
    _claims: dict[str, dict[str, object]] = field(default_factory=dict)

    def walk(self, entries: list[Entry], seconds: float) -> list[Entry]:
        """Enough requests for `seconds` of load, from `entries` in turn (each walk starts where
        the previous one ended), each session's with a token of its own."""
        per_token = REQUESTS_PER_TOKEN
        sessions = max(1, math.ceil(seconds * MAX_REQUESTS_PER_SECOND / per_token))
        first = self._walks * sessions
        self._walks += 1
        chosen = [entries[(first + index) % len(entries)] for index in range(sessions)]
        tokens = [self._mint(entry.token) for entry in chosen]
        walk: list[Entry] = []
        for start in range(0, sessions, BLOCK_SESSIONS):
            block = range(start, min(start + BLOCK_SESSIONS, sessions))
            for visit in range(per_token):
                walk += [_visit(chosen[i], tokens[i], visit) for i in block]
        return walk

    def _mint(self, token: str) -> str:
        """A new token of the same session (user, version, session id) as `token`: the app's
        claims, plus a `jti` so that no two are alike (the app ignores it)."""
        claims = self._claims.get(token)
        if claims is None:
            claims = jwt.decode(token, options={"verify_signature": False})
            self._claims[token] = claims
        now = datetime.now(UTC)
        return jwt.encode(
            {
                "sub": claims["sub"],
                "iat": int(now.timestamp()),
                "exp": int(
                    (now + timedelta(seconds=self.settings.access_token_ttl_seconds)).timestamp()
                ),
                "typ": ACCESS_TOKEN_TYPE,
                "tv": claims["tv"],
                "sid": claims["sid"],
                "iss": self.settings.jwt_issuer,
                "jti": uuid.uuid4().hex,
            },
            self.settings.jwt_secret.get_secret_value(),
            algorithm=JWT_ALGORITHM,
        )


def _visit(entry: Entry, token: str, visit: int) -> Entry:
    path = entry.alternate if entry.alternate and visit % 2 else entry.path
    return replace(entry, token=token, path=path, alternate=None)
