"""The caller's language for a problem body (errors.request_locale): the settings.locale of the
user named by a valid access token.

Only an error pays for it: one read of user_settings by its unique user_id, on the hot reads'
pool. The token is checked as every route checks it first (signature, expiry), not whether it is
still current: a revoked token's holder learns nothing from the language of a 401.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from starlette.requests import Request

from goaltrack.auth.security import decode_access_token
from goaltrack.clock import utcnow
from goaltrack.config import Settings
from goaltrack.profile.models import UserSettings
from goaltrack.reads import PreparedStatement, Reader

SETTINGS_LOCALE = PreparedStatement(
    select(UserSettings.locale).where(UserSettings.user_id == bindparam("user_id"))
)


async def caller_locale(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    settings: Settings = request.app.state.settings
    claims = decode_access_token(settings, token.strip(), utcnow())
    reader: Reader | None = getattr(request.app.state, "reader", None)
    if claims is None or reader is None:
        return None
    rows = await reader.fetch(SETTINGS_LOCALE, {"user_id": claims.user_id})
    return str(rows[0]["locale"]) if rows else None
