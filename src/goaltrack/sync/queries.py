"""GET /sync's statements: the page of changes (the caller's token check folded in, one round
trip when nothing changed), then the changed objects' current state, a statement per kind."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Uuid, and_, any_, bindparam, literal_column, or_, select, true
from sqlalchemy import tuple_ as row
from sqlalchemy.dialects.postgresql import ARRAY

from goaltrack.achievements.models import Achievement
from goaltrack.auth.caller import caller_is_current
from goaltrack.auth.models import User
from goaltrack.changes import SyncChange
from goaltrack.goals import queries as goals
from goaltrack.goals.models import Goal
from goaltrack.notifications import queries as notifications
from goaltrack.notifications.models import Notification
from goaltrack.profile.models import UserSettings
from goaltrack.profile.queries import zone_of
from goaltrack.reads import PreparedStatement

# The visibility horizon: every transaction below it has finished, so no change can still
# appear there. A statement's own snapshot, so the page and the horizon it reports agree.
HORIZON = literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint", BigInteger)


def _changes_statement() -> Any:
    page = (
        select(
            SyncChange.kind,
            SyncChange.object_id,
            SyncChange.deleted,
            SyncChange.xid,
            SyncChange.seq,
            Achievement.code,
        )
        .outerjoin(
            Achievement,
            and_(SyncChange.kind == "achievement", Achievement.id == SyncChange.object_id),
        )
        # ix_sync_changes_user_id_xid_seq: a keyset read, whatever the length of the history.
        .where(
            SyncChange.user_id == bindparam("user_id"),
            row(SyncChange.xid, SyncChange.seq)
            > row(
                bindparam("after_xid", type_=BigInteger), bindparam("after_seq", type_=BigInteger)
            ),
            SyncChange.xid < HORIZON,
            # Tombstones of objects deleted before the client's first sync began: it never had them.
            or_(~SyncChange.deleted, SyncChange.xid >= bindparam("floor", type_=BigInteger)),
        )
        .order_by(SyncChange.xid, SyncChange.seq)
        .limit(bindparam("limit"))
        .lateral("page")
    )
    return (
        select(User.id.label("caller_id"), HORIZON.label("horizon"), page)
        .select_from(User)
        .outerjoin(page, true())
        .where(caller_is_current())
    )


CHANGES = PreparedStatement(_changes_statement())

IDS = bindparam("ids", type_=ARRAY(Uuid()))

GOALS = PreparedStatement(
    select(zone_of(Goal.user_id).label("zone"), *goals.detail_columns()).where(
        Goal.user_id == bindparam("user_id"), Goal.id == any_(IDS)
    )
)
NOTIFICATIONS = PreparedStatement(
    select(*notifications.COLUMNS).where(
        Notification.user_id == bindparam("user_id"), Notification.id == any_(IDS)
    )
)
SETTINGS = PreparedStatement(
    select(UserSettings).where(UserSettings.user_id == bindparam("user_id"))
)
