"""Idempotency keys (goaltrack.idempotency) claimed as the caller: the key belongs to the access
token's user, and a claim that answers by itself (a replay, 409, 422) first checks that the token
is still current, as the route would have.

Every router is created with `route_class=IdempotentRoute`: an authenticated POST then claims its
key with `claim_key` (content: the JSON body) before anything else it does, unless it declares a
claim of its own (an upload claims after reading the file: goals.dependencies).
tests/test_idempotency.py walks the app's routes and holds every authenticated POST to it.
"""

from __future__ import annotations

from fastapi import Depends, Request

from goaltrack import idempotency
from goaltrack.auth.caller import AccessClaimsDep, require_current
from goaltrack.db import SessionDep


@idempotency.claims_key
async def claim_key(request: Request, session: SessionDep, claims: AccessClaimsDep) -> None:
    async def content() -> bytes:
        # Read already by FastAPI for a route with a body (Request caches it); bounded by
        # BodyLimits for any other.
        return idempotency.json_content(await request.body())

    await idempotency.claim(
        request,
        session,
        owner=claims.user_id,
        content=content,
        verify_owner=lambda: require_current(session, claims),
    )


class IdempotentRoute(idempotency.IdempotentRouteBase):
    claim = Depends(claim_key)
