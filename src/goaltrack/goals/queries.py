"""The hot reads: one statement each, the caller's token check and ownership folded in.

A request to GET /goals or GET /goals/{id} is one round trip to PostgreSQL: the statement joins
`users` on (id, token_version, not deleted), so a revoked token and the data are checked together.
No row at all means the caller is not authenticated; a caller row without a goal means 404 or an
empty page. Statements are built once at import; rows go straight into the response models.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, select, true, tuple_
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.errors import NotAuthenticated, NotFound
from goaltrack.goals.models import Goal, GoalAttachment, GoalReminder, GoalStage
from goaltrack.goals.schemas import Attachment, GoalOut, GoalSummary, Reminder, Stage
from goaltrack.pagination import Cursor, ListPage, Page
from goaltrack.storage import Storage

SUMMARY_COLUMNS = (
    Goal.id,
    Goal.title,
    Goal.description,
    Goal.deadline,
    Goal.progress,
    Goal.is_archived,
    Goal.completed_at,
    Goal.created_at,
    Goal.updated_at,
    Goal.stage_count,
    Goal.completed_stage_count,
    Goal.ai_status,
)

_caller = and_(
    User.id == bindparam("user_id"),
    User.token_version == bindparam("token_version"),
    User.deleted_at.is_(None),
)


def _list_statement(*, after_cursor: bool) -> Any:
    page = (
        select(*SUMMARY_COLUMNS)
        # The parameter, not `users.id`: with it the planner estimates this user's own row
        # count and walks the index in order, even for a user with 10,000 goals.
        .where(Goal.user_id == bindparam("user_id"), Goal.is_archived == bindparam("archived"))
        .order_by(Goal.created_at.desc(), Goal.id.desc())
        .limit(bindparam("limit"))
    )
    if after_cursor:
        page = page.where(
            tuple_(Goal.created_at, Goal.id)
            < tuple_(bindparam("after_created_at"), bindparam("after_id"))
        )
    goals = page.lateral("page")
    return (
        select(User.id.label("caller_id"), goals)
        .select_from(User)
        .outerjoin(goals, true())
        .where(_caller)
    )


_LIST = _list_statement(after_cursor=False)
_LIST_AFTER = _list_statement(after_cursor=True)


def _json_children(table: Any, fields: dict[str, str], order_by: str, label: str) -> Any:
    """A goal's child rows as one JSON array, built by PostgreSQL inside the goal's row: the goal
    and all its children come back in a single round trip, with no ORM objects in between."""
    child = table.alias("child")
    pairs = ", ".join(f"'{name}', {expression}" for name, expression in fields.items())
    rows: Any = literal_column(f"json_build_object({pairs}) ORDER BY {order_by}")
    return (
        select(func.coalesce(func.json_agg(rows), literal_column("'[]'::json")))
        .select_from(child)
        .where(child.c.goal_id == Goal.id)
        .scalar_subquery()
        .label(label)
    )


def _detail_statement() -> Any:
    stages = _json_children(
        GoalStage.__table__,
        {
            name: f"child.{name}"
            for name in ("id", "title", "description", "position", "is_completed", "completed_at")
        },
        order_by="child.position",
        label="stages",
    )
    attachments = _json_children(
        GoalAttachment.__table__,
        {
            name: f"child.{name}"
            for name in ("id", "file_name", "file_type", "size", "object_key", "created_at")
        },
        order_by="child.created_at, child.id",
        label="attachments",
    )
    reminders = _json_children(
        GoalReminder.__table__,
        {
            "id": "child.id",
            "remind_time": "to_char(child.remind_time, 'HH24:MI')",
            "frequency_days": "child.frequency_days",
            "next_fire_at": "child.next_fire_at",
        },
        order_by="child.remind_time, child.id",
        label="reminders",
    )
    return (
        select(
            User.id.label("caller_id"),
            *SUMMARY_COLUMNS,
            Goal.ai_error,
            stages,
            attachments,
            reminders,
        )
        .select_from(User)
        .outerjoin(Goal, and_(Goal.user_id == User.id, Goal.id == bindparam("goal_id")))
        .where(_caller)
    )


_DETAIL = _detail_statement()


class _Prepared:
    """A statement compiled once to asyncpg's `$n` SQL, run on the driver connection under
    SQLAlchemy's pool: asyncpg prepares it once per connection, and rows skip SQLAlchemy's
    result layer on their way into the response models."""

    def __init__(self, statement: Any) -> None:
        compiled = statement.compile(dialect=PGDialect_asyncpg())  # type: ignore[no-untyped-call]
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())

    async def fetch(self, executor: Executor, params: dict[str, Any]) -> list[Any]:
        connection = await executor.connection() if isinstance(executor, AsyncSession) else executor
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            rows: list[Any] = await driver.fetch(self.sql, *(params[name] for name in self.names))
        except BaseException:
            # SQLAlchemy does not see errors raised on the driver, so it cannot tell a dropped or
            # half-used connection (server restart, failover, a cancelled request) from a healthy
            # one: discard it. This request fails (503 for an outage); the next one reconnects.
            await connection.invalidate()
            raise
        return rows


# A pooled autocommit connection for the hot reads, or the request's session inside a write
# (the statement then runs in its transaction and sees its changes).
Executor = AsyncConnection | AsyncSession

_LIST_PREPARED = _Prepared(_LIST)
_LIST_AFTER_PREPARED = _Prepared(_LIST_AFTER)
_DETAIL_PREPARED = _Prepared(_DETAIL)


async def list_goals(
    executor: Executor, caller: AccessClaims, *, archived: bool, page: Page
) -> ListPage[GoalSummary]:
    params: dict[str, Any] = {
        "user_id": caller.user_id,
        "token_version": caller.token_version,
        "archived": archived,
        "limit": page.limit + 1,  # one more than asked tells whether a next page exists
    }
    statement = _LIST_PREPARED
    if page.after is not None:
        statement = _LIST_AFTER_PREPARED
        params |= {"after_created_at": page.after.created_at, "after_id": page.after.id}
    rows = await statement.fetch(executor, params)
    if not rows:
        raise NotAuthenticated
    items = [GoalSummary.model_validate(dict(row)) for row in rows if row["id"] is not None]
    next_cursor = None
    if len(items) > page.limit:
        items = items[: page.limit]
        next_cursor = Cursor(items[-1].created_at, items[-1].id).encode()
    return ListPage[GoalSummary](items=items, next_cursor=next_cursor)


async def get_goal(
    executor: Executor,
    storage: Storage,
    caller: AccessClaims,
    goal_id: uuid.UUID,
    *,
    url_ttl: int,
) -> GoalOut:
    rows = await _DETAIL_PREPARED.fetch(
        executor,
        {"user_id": caller.user_id, "token_version": caller.token_version, "goal_id": goal_id},
    )
    if not rows:
        raise NotAuthenticated
    row = rows[0]
    if row["id"] is None:
        raise NotFound
    # SQLAlchemy's asyncpg dialect installs a JSON codec on its connections: arrays arrive decoded.
    values = dict(row)
    values["stages"] = [Stage.model_validate(stage) for stage in row["stages"]]
    values["reminders"] = [Reminder.model_validate(item) for item in row["reminders"]]
    values["attachments"] = [
        await attachment_out(storage, item, url_ttl=url_ttl) for item in row["attachments"]
    ]
    return GoalOut.model_validate(values)


async def attachment_out(storage: Storage, item: dict[str, Any], *, url_ttl: int) -> Attachment:
    """An attachment with a fresh short-lived download URL (PDFs download, images show inline)."""
    url = await storage.presigned_get(
        item["object_key"],
        expires_in=url_ttl,
        download_name=item["file_name"],
        as_attachment=item["file_type"] == "application/pdf",
    )
    return Attachment.model_validate({**item, "url": url})
