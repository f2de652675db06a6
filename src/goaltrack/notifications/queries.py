"""The feed's hot read: a page of notifications and the unread count in one round trip, the
caller's token check folded in."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Text, and_, bindparam, case, cast, func, select, true, tuple_

from goaltrack import jsontext
from goaltrack.auth.caller import caller_is_current, caller_params
from goaltrack.auth.models import User
from goaltrack.auth.security import AccessClaims
from goaltrack.errors import NotAuthenticated
from goaltrack.notifications.kinds import NotificationData
from goaltrack.notifications.models import Notification
from goaltrack.notifications.schemas import NotificationFields
from goaltrack.pagination import Page
from goaltrack.reads import PreparedStatement, Reader

COLUMNS = (
    Notification.id,
    Notification.type,
    Notification.title,
    Notification.body,
    Notification.data,
    Notification.is_read,
    Notification.created_at,
)


FIELDS = tuple(NotificationFields.model_fields)
DATA_AT = FIELDS.index("data")
COLUMN = Notification.__table__.c
# A notification's `data` with its kind's members in its model's order. Any other type (none is
# written: every writer goes through a kind) would still be valid JSON: jsonb's own text.
DATA = case(
    *(
        (
            COLUMN.type == jsontext.constant(kind.type),
            jsontext.jsonb_members(COLUMN.data, kind.model_fields),
        )
        for kind in NotificationData.__subclasses__()
    ),
    else_=cast(COLUMN.data, Text),
)
# A notification as JSON text written by PostgreSQL (goaltrack.jsontext), its `data` too: no value
# is decoded into Python only to be encoded again. Decoding `data` in the driver and encoding it
# here cost the feed most of its p99 gap to the ceiling's (README, Performance: sixth round).
ITEM = (
    jsontext.object_head({name: COLUMN[name] for name in FIELDS[:DATA_AT]})
    + jsontext.constant(',"data":')
    + DATA
    + jsontext.constant(",")
    + jsontext.members({name: COLUMN[name] for name in FIELDS[DATA_AT + 1 :]})
    + jsontext.constant("}")
).label("item")


def _feed_statement(*, after_cursor: bool) -> Any:
    page = (
        select(Notification.id, Notification.created_at, ITEM)
        .where(Notification.user_id == bindparam("user_id"))
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(bindparam("limit"))
    )
    if after_cursor:
        page = page.where(
            tuple_(Notification.created_at, Notification.id)
            < tuple_(bindparam("after_created_at"), bindparam("after_id"))
        )
    rows = page.lateral("page")
    # ix_notifications_user_id_unread: an index-only count of this user's unread rows. On the
    # parameter, not `users.id`, so it runs once (an InitPlan), not once per row of the page;
    # and `NOT is_read`, the index's own predicate (`IS false` does not prove it: a full scan).
    unread = (
        select(func.count())
        .select_from(Notification)
        .where(and_(Notification.user_id == bindparam("user_id"), ~Notification.is_read))
        .scalar_subquery()
        .label("unread_count")
    )
    return (
        select(User.id.label("caller_id"), unread, rows)
        .select_from(User)
        .outerjoin(rows, true())
        .where(caller_is_current())
    )


FEED = PreparedStatement(_feed_statement(after_cursor=False))
FEED_AFTER = PreparedStatement(_feed_statement(after_cursor=True))


async def feed(reader: Reader, caller: AccessClaims, page: Page) -> dict[str, Any]:
    """A page of the feed with the unread count, shaped as `NotificationPage`."""
    statement = FEED if page.after is None else FEED_AFTER
    rows = await reader.fetch(statement, {**caller_params(caller), **page.params()})
    if not rows:
        raise NotAuthenticated
    listed, next_cursor = page.cut([row for row in rows if row["id"] is not None])
    items = [orjson.Fragment(row["item"]) for row in listed]
    return {"items": items, "next_cursor": next_cursor, "unread_count": rows[0]["unread_count"]}
