"""The hot reads: one statement each, the caller's token check and ownership folded in.

A request to GET /goals or GET /goals/{id} is one round trip to PostgreSQL: the statement joins
`users` on (id, token_version, not deleted, live session), so a revoked token and the data are
checked together.
No row at all means the caller is not authenticated; a caller row without a goal means 404 or an
empty page. Statements are built once at import; rows go straight into the response models.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Date,
    Integer,
    SQLColumnExpression,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    null,
    select,
    true,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from goaltrack import jsontext
from goaltrack.auth.caller import caller_is_current, caller_params
from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.changes import GOALS_VERSION, etag, version_of
from goaltrack.clock import utcnow
from goaltrack.errors import NotAuthenticated, NotFound
from goaltrack.goals import habits
from goaltrack.goals.models import Goal, GoalAttachment, GoalReminder, GoalStage
from goaltrack.goals.schemas import GoalOut, GoalSummary, Stage
from goaltrack.pagination import Page
from goaltrack.profile.models import UserSettings
from goaltrack.profile.queries import local_date, zone_of
from goaltrack.reads import PreparedStatement, Reader
from goaltrack.storage import Storage


def day_number(column: SQLColumnExpression[date | None]) -> ColumnElement[int]:
    """A date column as its day number (habits.Day): days since 1 January of year 1, plus one,
    which is Python's `date.toordinal()` (both calendars are proleptic Gregorian)."""
    return type_coerce(column - literal_column("DATE '0001-01-01'", Date), Integer) + 1


# A habit's schedule and the Summary its figures come from (goals.habits), as one JSON value:
# NULL for a plain goal, so a list of goals decodes one more column, not eight (`habit_today`).
# Its dates come as day numbers (habits.Day), so a read builds no `date` for them.
HABIT_VALUE = case(
    (
        Goal.kind == "habit",
        func.json_build_object(
            *(
                part
                for name, column in (
                    ("schedule", Goal.schedule),
                    ("start", day_number(Goal.habit_start)),
                    ("run", Goal.streak_run),
                    ("run_end", day_number(Goal.streak_run_end)),
                    ("longest", Goal.streak_longest),
                    ("mask", Goal.checkin_mask),
                    ("mask_end", day_number(Goal.checkin_mask_end)),
                )
                for part in (literal(name, String), column)
            )
        ),
    ),
    else_=null(),
)
HABIT = HABIT_VALUE.label("habit")

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
    Goal.kind,
    HABIT,
)


# Whether the caller has a habit (ix_goals_user_id_habits): a habit's figures change with the
# local date, so the lists' ETag then names the date too.
HAS_HABITS = exists().where(Goal.user_id == bindparam("user_id"), Goal.kind == "habit")


# The response models' field order: the hot reads render rows straight into JSON (reads.py), so
# a payload's keys are laid out as its model would lay them out.
SUMMARY_FIELDS = tuple(GoalSummary.model_fields)
DETAIL_FIELDS = tuple(GoalOut.model_fields)
# GoalSummary's fields that are columns of the row; the habit's figures follow, in NO_HABIT's
# order, which is the model's.
ROW_SUMMARY_FIELDS = SUMMARY_FIELDS[: SUMMARY_FIELDS.index("schedule")]

# A listed goal's columns as JSON text, written by PostgreSQL (goaltrack.jsontext) and left open
# for its habit figures (`habit_members`): a list decodes no value only to encode it again.
SUMMARY_HEAD = jsontext.object_head({name: Goal.__table__.c[name] for name in ROW_SUMMARY_FIELDS})


def _list_statement(*, after_cursor: bool) -> Any:
    page = (
        select(
            Goal.id,
            Goal.created_at,
            # As text: the key of the figures' memo (`habit_members`), decoded only on a miss.
            cast(HABIT_VALUE, Text).label("habit"),
            SUMMARY_HEAD.label("head"),
        )
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
        select(
            User.id.label("caller_id"),
            GOALS_VERSION.label("version"),
            HAS_HABITS.label("has_habits"),
            UserSettings.timezone.label("zone"),
            goals,
        )
        .select_from(User)
        # Joined, not `zone_of`: a subquery in this list would run once per listed goal.
        .outerjoin(UserSettings, UserSettings.user_id == User.id)
        .outerjoin(goals, true())
        .where(caller_is_current())
    )


GOAL_LIST_STATEMENT = _list_statement(after_cursor=False)
GOAL_LIST_AFTER_STATEMENT = _list_statement(after_cursor=True)


def _json_children(
    table: Any, fields: dict[str, ColumnElement[Any]], order_by: Sequence[Any], label: str
) -> Any:
    """A goal's child rows as one JSON array, built by PostgreSQL inside the goal's row: the goal
    and all its children come back in a single round trip, with no ORM objects in between."""
    pairs = [part for name, column in fields.items() for part in (literal(name, String), column)]
    rows = aggregate_order_by(func.json_build_object(*pairs), *order_by)
    return (
        select(func.coalesce(func.json_agg(rows), literal_column("'[]'::json")))
        .where(table.c.goal_id == Goal.id)
        .scalar_subquery()
        .label(label)
    )


def detail_columns() -> tuple[Any, ...]:
    """A goal as GoalOut shows it: its row with its stages, attachments and reminders as JSON
    (rendered by `goal_payload`); the goal detail and GET /sync select them."""
    stage = GoalStage.__table__.alias("stage")
    attachment = GoalAttachment.__table__.alias("attachment")
    reminder = GoalReminder.__table__.alias("reminder")
    stages = _json_children(
        stage,
        {name: stage.c[name] for name in Stage.model_fields},
        order_by=[stage.c.position],
        label="stages",
    )
    attachments = _json_children(
        attachment,
        {
            name: attachment.c[name]
            for name in (
                "id",
                "goal_id",
                "file_name",
                "file_type",
                "size",
                "object_key",
                "created_at",
            )
        },
        order_by=[attachment.c.created_at, attachment.c.id],
        label="attachments",
    )
    reminders = _json_children(
        reminder,
        {
            "id": reminder.c.id,
            "remind_time": func.to_char(reminder.c.remind_time, "HH24:MI"),
            "frequency_days": reminder.c.frequency_days,
            "weekdays": reminder.c.weekdays,
            "only_if_not_done": reminder.c.only_if_not_done,
            "next_fire_at": reminder.c.next_fire_at,
        },
        order_by=[reminder.c.remind_time, reminder.c.id],
        label="reminders",
    )
    return (*SUMMARY_COLUMNS, Goal.ai_error, stages, attachments, reminders)


def _detail_statement() -> Any:
    return (
        select(
            User.id.label("caller_id"),
            zone_of(User.id).label("zone"),
            *detail_columns(),
            version_of("goal", User.id, Goal.id).label("version"),
        )
        .select_from(User)
        .outerjoin(Goal, and_(Goal.user_id == User.id, Goal.id == bindparam("goal_id")))
        .where(caller_is_current())
    )


_DETAIL = _detail_statement()


GOAL_LIST = PreparedStatement(GOAL_LIST_STATEMENT)
GOAL_LIST_AFTER = PreparedStatement(GOAL_LIST_AFTER_STATEMENT)
GOAL_DETAIL = PreparedStatement(_DETAIL)

# What `If-None-Match` is compared with, before anything is rendered: the version alone.
GOALS_VERSION_ONLY = PreparedStatement(
    select(
        User.id.label("caller_id"),
        GOALS_VERSION.label("version"),
        HAS_HABITS.label("has_habits"),
        zone_of(User.id).label("zone"),
    )
    .select_from(User)
    .where(caller_is_current())
)
GOAL_VERSION_ONLY = PreparedStatement(
    select(
        User.id.label("caller_id"),
        Goal.id,
        Goal.kind,
        zone_of(User.id).label("zone"),
        version_of("goal", User.id, Goal.id).label("version"),
    )
    .select_from(User)
    .outerjoin(Goal, and_(Goal.user_id == User.id, Goal.id == bindparam("goal_id")))
    .where(caller_is_current())
)


NO_HABIT = {
    "schedule": None,
    "streak": None,
    "due_today": None,
    "done_today": None,
    "completion_rate_30d": None,
}


def habit_today(habit: Mapping[str, Any] | None, today: date) -> habits.Today | None:
    """A habit's figures on the user's `today`, from its `HABIT` value (no check-in rows); None
    for a plain goal."""
    if habit is None:
        return None
    schedule = habits.schedule_of(habit["schedule"], habit["start"])
    summary = habits.Summary(
        habit["run"], habit["run_end"], habit["longest"], habit["mask"], habit["mask_end"]
    )
    return habits.today_figures(schedule, summary, today.toordinal())


def habit_fields(row: Mapping[str, Any], today: date) -> dict[str, Any]:
    """A row's habit figures as GoalSummary shows them (NO_HABIT for a plain goal)."""
    figures = habit_today(row["habit"], today)
    if figures is None:
        return NO_HABIT
    schedule = row["habit"]["schedule"]
    return {
        # `type` first, as the model lays it out: jsonb keeps keys shortest first ("n", "days").
        "schedule": {"type": schedule["type"], **schedule},
        "streak": {"current": figures.streak_current, "longest": figures.streak_longest},
        "due_today": figures.due_today,
        "done_today": figures.done_today,
        "completion_rate_30d": figures.completion_rate_30d,
    }


def goal_etag(version: int | None, *, habit: bool, today: date) -> str:
    """A habit's figures move with the user's date: its ETag names that date too."""
    return etag(f"{version or 0}.{today.isoformat()}" if habit else version)


# Habit values remembered with their figures (`habit_members`): about 0.5 KB each (estimated, not
# measured), so 16,384 are about 8 MB a worker; the least recently listed go first.
HABIT_MEMBERS_CACHE = 16_384
# A plain goal's figures (NO_HABIT's members) after a listed goal's `head`.
PLAIN_MEMBERS = "," + orjson.dumps(NO_HABIT)[1:-1].decode()


@lru_cache(maxsize=HABIT_MEMBERS_CACHE)
def habit_members(habit: str, today: date) -> str:
    """A habit's figures as a listed goal's members (`,"schedule":...`) from its `HABIT` value as
    text, on the user's `today`. Remembered: the figures move only with a check-in (which changes
    the value) or the date (the other key), and a phone reads its list many times a day; a miss
    costs about 8 µs, a hit a lookup."""
    return "," + orjson.dumps(habit_fields({"habit": orjson.loads(habit)}, today))[1:-1].decode()


def as_instant(value: str | None) -> datetime | None:
    """A timestamp from PostgreSQL's JSON text (`+00:00`, trailing zeros trimmed)."""
    return None if value is None else datetime.fromisoformat(value)


def summaries(rows: Sequence[Mapping[str, Any]], today: date) -> list[orjson.Fragment]:
    """Listed goals' rows (`head` and `habit`), each the JSON of a GoalSummary."""
    return [
        orjson.Fragment(
            row["head"]
            + (PLAIN_MEMBERS if row["habit"] is None else habit_members(row["habit"], today))
            + "}"
        )
        for row in rows
    ]


async def goals_version(reader: Reader, caller: AccessClaims) -> str:
    """The ETag every goal list has now (any change to any of the caller's goals changes it)."""
    rows = await reader.fetch(GOALS_VERSION_ONLY, caller_params(caller))
    if not rows:
        raise NotAuthenticated
    row = rows[0]
    return goal_etag(
        row["version"], habit=row["has_habits"], today=local_date(row["zone"], utcnow())
    )


async def goal_version(reader: Reader, caller: AccessClaims, goal_id: uuid.UUID) -> str:
    """The goal's ETag now; 404 when it is not the caller's."""
    rows = await reader.fetch(GOAL_VERSION_ONLY, {**caller_params(caller), "goal_id": goal_id})
    if not rows:
        raise NotAuthenticated
    row = rows[0]
    if row["id"] is None:
        raise NotFound
    today = local_date(row["zone"], utcnow())
    return goal_etag(row["version"], habit=row["kind"] == "habit", today=today)


async def list_goals(
    reader: Reader, caller: AccessClaims, *, archived: bool, page: Page
) -> tuple[dict[str, Any], str]:
    """A page of goals, shaped as `ListPage[GoalSummary]`, and the lists' ETag."""
    statement = GOAL_LIST if page.after is None else GOAL_LIST_AFTER
    params = {**caller_params(caller), "archived": archived, **page.params()}
    rows = await reader.fetch(statement, params)
    if not rows:
        raise NotAuthenticated
    first = rows[0]
    today = local_date(first["zone"], utcnow())
    listed, next_cursor = page.cut([row for row in rows if row["id"] is not None])
    items = summaries(listed, today)
    version = goal_etag(first["version"], habit=first["has_habits"], today=today)
    return {"items": items, "next_cursor": next_cursor}, version


@dataclass(frozen=True, slots=True)
class GoalRow:
    """A goal's detail row as read, the user's date it is shown for, and its ETag."""

    row: Mapping[str, Any]
    today: date
    version: str

    async def payload(self, storage: Storage, *, url_ttl: int) -> dict[str, Any]:
        """Shaped as `GoalOut` (no statement: after a write, its transaction may be over)."""
        return await goal_payload(storage, self.row, url_ttl=url_ttl, today=self.today)


async def read_goal(reader: Reader, caller: AccessClaims, goal_id: uuid.UUID) -> GoalRow:
    """One goal with its stages, attachments and reminders, as one row."""
    rows = await reader.fetch(
        GOAL_DETAIL,
        {**caller_params(caller), "goal_id": goal_id},
    )
    if not rows:
        raise NotAuthenticated
    row = rows[0]
    if row["id"] is None:
        raise NotFound
    today = local_date(row["zone"], utcnow())
    return GoalRow(row, today, goal_etag(row["version"], habit=row["kind"] == "habit", today=today))


async def get_goal(
    reader: Reader,
    storage: Storage,
    caller: AccessClaims,
    goal_id: uuid.UUID,
    *,
    url_ttl: int,
) -> tuple[dict[str, Any], str]:
    """One goal with its stages, attachments and reminders, shaped as `GoalOut`, and its ETag."""
    goal = await read_goal(reader, caller, goal_id)
    return await goal.payload(storage, url_ttl=url_ttl), goal.version


async def goal_payload(
    storage: Storage, row: Mapping[str, Any], *, url_ttl: int, today: date
) -> dict[str, Any]:
    """A goal's row (SUMMARY_COLUMNS, ai_error and its children as JSON) shaped as `GoalOut`,
    a habit's figures as of the user's `today`."""
    # The children come as JSON arrays (decoded by the connection's codec), timestamps as text.
    values = dict(row)
    values["stages"] = [
        {**stage, "completed_at": as_instant(stage["completed_at"])} for stage in row["stages"]
    ]
    values["reminders"] = [
        {**item, "next_fire_at": as_instant(item["next_fire_at"])} for item in row["reminders"]
    ]
    values["attachments"] = [
        await attachment_out(
            storage, {**item, "created_at": as_instant(item["created_at"])}, url_ttl=url_ttl
        )
        for item in row["attachments"]
    ]
    values.update(habit_fields(row, today))
    return {name: values[name] for name in DETAIL_FIELDS}


async def attachment_out(
    storage: Storage, item: Mapping[str, Any], *, url_ttl: int
) -> dict[str, Any]:
    """An attachment, shaped as `Attachment`, with a fresh short-lived download URL (PDFs
    download, images show inline)."""
    url = await storage.presigned_get(
        item["object_key"],
        expires_in=url_ttl,
        download_name=item["file_name"],
        content_type=item["file_type"],  # forced; anything not an image downloads as a file
    )
    return {
        "id": item["id"],
        "file_name": item["file_name"],
        "file_type": item["file_type"],
        "size": item["size"],
        "url": url,
        "content_url": content_path(item["goal_id"], item["id"]),
        "created_at": item["created_at"],
    }


def content_path(goal_id: uuid.UUID, attachment_id: uuid.UUID) -> str:
    """The attachment's stable address: it redirects to a fresh presigned URL, so an image cache
    can key on it (the presigned `url` changes with every signing)."""
    return f"/goals/{goal_id}/attachments/{attachment_id}/content"
