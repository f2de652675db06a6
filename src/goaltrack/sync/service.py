"""Reading the change log as pages of changes (the design: goaltrack.sync)."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from goaltrack.account.schemas import SettingsOut
from goaltrack.achievements import service as achievements
from goaltrack.auth.caller import caller_params
from goaltrack.auth.security import AccessClaims
from goaltrack.changes import SyncChange
from goaltrack.errors import NotAuthenticated
from goaltrack.goals.queries import goal_payload
from goaltrack.notifications.queries import FIELDS as NOTIFICATION_FIELDS
from goaltrack.profile.queries import local_date
from goaltrack.reads import Reader
from goaltrack.storage import Storage
from goaltrack.sync import queries
from goaltrack.sync.errors import InvalidSyncCursor, SyncCursorExpired

DEFAULT_LIMIT = 200
MAX_LIMIT = 500
RETENTION_BATCH = 5000
# No tombstone is collected sooner than this after a cursor stops being valid: a change is
# stamped when its transaction starts, which may be before the cursor that misses it.
RETENTION_SLACK = timedelta(days=1)
_BIGINT = 2**63


@dataclass(frozen=True, slots=True)
class SyncCursor:
    """Where a client stands: everything up to (xid, seq) delivered; tombstones below `floor`
    (the horizon when its first sync began) are of objects it never had; `caught_up` (epoch
    seconds) is when it last had everything, which tells when the tombstones it still needs
    may have been collected."""

    xid: int
    seq: int
    floor: int
    caught_up: int

    def encode(self) -> str:
        raw = f"1.{self.xid}.{self.seq}.{self.floor}.{self.caught_up}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, value: str) -> SyncCursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
            version, *fields = raw.split(".")
            numbers = [int(field) for field in fields]
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidSyncCursor from exc
        if version != "1" or len(numbers) != 4 or not all(0 <= n < _BIGINT for n in numbers):
            raise InvalidSyncCursor
        return cls(*numbers)


# What a change names its object by: settings are the caller's own (no id), an achievement is
# known by its code.
PUBLIC_ID: dict[str, Callable[[Any], Any]] = {
    "goal": lambda change: change["object_id"],
    "notification": lambda change: change["object_id"],
    "settings": lambda change: None,
    "achievement": lambda change: change["code"],
}


async def read_changes(
    reader: Reader,
    storage: Storage,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    caller: AccessClaims,
    *,
    cursor: str | None,
    limit: int,
    now: datetime,
    tombstone_days: int,
    url_ttl: int,
) -> dict[str, Any]:
    """A page of changes after `cursor` (the whole state without one), shaped as `SyncPage`."""
    start = SyncCursor.decode(cursor) if cursor is not None else None
    if start is not None and start.caught_up < (now - timedelta(days=tombstone_days)).timestamp():
        raise SyncCursorExpired
    rows = await reader.fetch(
        queries.CHANGES,
        {
            **caller_params(caller),
            "after_xid": start.xid if start else 0,
            "after_seq": start.seq if start else 0,
            # The first page skips every tombstone: all of them are below the horizon.
            "floor": start.floor if start else _BIGINT - 1,
            "limit": limit + 1,
        },
    )
    if not rows:
        raise NotAuthenticated
    changed = [row for row in rows if row["kind"] is not None]
    has_more = len(changed) > limit
    changed = changed[:limit]
    last = changed[-1] if changed else None
    position = SyncCursor(
        xid=last["xid"] if last else start.xid if start else 0,
        seq=last["seq"] if last else start.seq if start else 0,
        floor=start.floor if start else rows[0]["horizon"],
        caught_up=(start.caught_up if start and has_more else int(now.timestamp())),
    )
    changes = await _render(reader, storage, redis, sessionmaker, caller, changed, url_ttl, now)
    return {"changes": changes, "cursor": position.encode(), "has_more": has_more}


async def _render(
    reader: Reader,
    storage: Storage,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    caller: AccessClaims,
    changed: list[Any],
    url_ttl: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Each change with its object's current state, a statement per kind present. An object
    deleted since the page was read is left out: its tombstone comes in a later page."""
    wanted: defaultdict[str, list[Any]] = defaultdict(list)
    for change in changed:
        if not change["deleted"]:
            wanted[change["kind"]].append(change["object_id"])
    user = {"user_id": caller.user_id}
    data: dict[tuple[str, Any], Any] = {}
    if ids := wanted["goal"]:
        for row in await reader.fetch(queries.GOALS, {**user, "ids": ids}):
            today = local_date(row["zone"], now)
            data["goal", row["id"]] = await goal_payload(storage, row, url_ttl=url_ttl, today=today)
    if ids := wanted["notification"]:
        for row in await reader.fetch(queries.NOTIFICATIONS, {**user, "ids": ids}):
            data["notification", row["id"]] = {name: row[name] for name in NOTIFICATION_FIELDS}
    if wanted["settings"]:
        for row in await reader.fetch(queries.SETTINGS, user):
            data["settings", caller.user_id] = SettingsOut.model_validate(dict(row)).model_dump(
                mode="json"
            )
    if wanted["achievement"]:
        catalogue = await achievements.list_for_user(reader, sessionmaker, redis, caller=caller)
        earned = {item["code"]: item for item in catalogue["items"] if item["earned"]}
        for change in changed:
            if change["kind"] == "achievement" and change["code"] in earned:
                data["achievement", change["object_id"]] = earned[change["code"]]

    changes: list[dict[str, Any]] = []
    for change in changed:
        kind, object_id = change["kind"], change["object_id"]
        public_id = PUBLIC_ID[kind](change)
        if change["deleted"]:
            changes.append({"type": kind, "id": public_id, "op": "delete"})
        elif (found := data.get((kind, object_id))) is not None:
            changes.append({"type": kind, "id": public_id, "op": "upsert", "data": found})
    return changes


async def delete_expired_tombstones(
    session: AsyncSession, *, now: datetime, keep: timedelta
) -> int:
    """One batch of tombstones older than `keep` (ix_sync_changes_tombstones). A user's newest
    row of a kind stays, tombstone or not: the goal lists' ETag is that row's version, and must
    never go back to a value a client may still hold."""
    newest = select(func.max(SyncChange.seq)).where(
        SyncChange.user_id == (expired := SyncChange.__table__.alias("expired")).c.user_id,
        SyncChange.kind == expired.c.kind,
    )
    batch = (
        select(expired.c.user_id, expired.c.kind, expired.c.object_id)
        .where(
            expired.c.deleted,
            expired.c.changed_at < now - keep,
            expired.c.seq < newest.scalar_subquery(),
        )
        .limit(RETENTION_BATCH)
    )
    result = await session.execute(
        delete(SyncChange).where(
            func.row(SyncChange.user_id, SyncChange.kind, SyncChange.object_id).in_(batch)
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
