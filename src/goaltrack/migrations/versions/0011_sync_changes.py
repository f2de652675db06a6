"""sync_changes: every change to a user's synced objects, recorded by triggers

Revision ID: d93f1a6b5e27
Revises: 8e0a3c5d6b21
Create Date: 2026-12-07 06:00:00
"""

import re
from collections.abc import Sequence

from alembic import op

revision: str = "d93f1a6b5e27"
down_revision: str | None = "8e0a3c5d6b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The change log is written by PostgreSQL itself: every path that writes a synced row (API, AI
# worker, scheduler, account deletion, a manual fix in psql) feeds it, and a new write cannot
# forget to. One row per object, holding its latest change: `xid` is the writing transaction
# (pg_current_xact_id, 64-bit, never wraps) and `seq` orders the rows of one transaction.
# A reader takes only rows whose transaction is older than every transaction still running
# (pg_snapshot_xmin), so a change that commits late can never fall behind a cursor (sync/).
RECORD = """
CREATE FUNCTION sync_record(p_user uuid, p_kind text, p_object uuid, p_deleted boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- A user being deleted takes every row with it (ON DELETE CASCADE): nothing to record.
    IF NOT EXISTS (SELECT FROM users WHERE id = p_user) THEN
        RETURN;
    END IF;
    INSERT INTO sync_changes AS c (user_id, kind, object_id, deleted, xid, seq, changed_at)
    VALUES (p_user, p_kind, p_object, p_deleted,
            pg_current_xact_id()::text::bigint, nextval('sync_changes_seq'), now())
    ON CONFLICT (user_id, kind, object_id) DO UPDATE
        SET deleted = excluded.deleted, xid = excluded.xid, seq = excluded.seq,
            changed_at = excluded.changed_at
        -- One version per transaction: its later statements leave the row as it is.
        WHERE c.xid <> excluded.xid OR c.deleted <> excluded.deleted;
END $$;

-- A row that is a synced object itself (a goal, a notification): its kind is the argument.
CREATE FUNCTION sync_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM sync_record(OLD.user_id, TG_ARGV[0], OLD.id, true);
    ELSE
        PERFORM sync_record(NEW.user_id, TG_ARGV[0], NEW.id, false);
    END IF;
    RETURN NULL;
END $$;

-- A stage, attachment or reminder is part of its goal's representation. When the goal itself
-- is being deleted (the cascade), its own trigger records the tombstone.
CREATE FUNCTION sync_goal_part() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    part_goal uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.goal_id ELSE NEW.goal_id END;
BEGIN
    PERFORM sync_record(goals.user_id, 'goal', goals.id, false)
    FROM goals WHERE goals.id = part_goal;
    IF TG_OP = 'UPDATE' AND OLD.goal_id <> NEW.goal_id THEN
        PERFORM sync_record(goals.user_id, 'goal', goals.id, false)
        FROM goals WHERE goals.id = OLD.goal_id;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION sync_settings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sync_record(NEW.user_id, 'settings', NEW.user_id, false);
    RETURN NULL;
END $$;

CREATE FUNCTION sync_achievement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM sync_record(NEW.user_id, 'achievement', NEW.achievement_id, false);
    RETURN NULL;
END $$;

CREATE TRIGGER sync_goals AFTER INSERT OR UPDATE OR DELETE ON goals
    FOR EACH ROW EXECUTE FUNCTION sync_row('goal');
CREATE TRIGGER sync_goal_stages AFTER INSERT OR UPDATE OR DELETE ON goal_stages
    FOR EACH ROW EXECUTE FUNCTION sync_goal_part();
CREATE TRIGGER sync_goal_attachments AFTER INSERT OR UPDATE OR DELETE ON goal_attachments
    FOR EACH ROW EXECUTE FUNCTION sync_goal_part();
-- Only what a Reminder shows: the scheduler's bookkeeping (last_sent_date...) is no change.
CREATE TRIGGER sync_goal_reminders_write AFTER INSERT OR DELETE ON goal_reminders
    FOR EACH ROW EXECUTE FUNCTION sync_goal_part();
CREATE TRIGGER sync_goal_reminders_update AFTER UPDATE ON goal_reminders
    FOR EACH ROW WHEN ((OLD.goal_id, OLD.remind_time, OLD.frequency_days, OLD.next_fire_at)
                       IS DISTINCT FROM
                       (NEW.goal_id, NEW.remind_time, NEW.frequency_days, NEW.next_fire_at))
    EXECUTE FUNCTION sync_goal_part();
CREATE TRIGGER sync_user_settings_insert AFTER INSERT ON user_settings
    FOR EACH ROW EXECUTE FUNCTION sync_settings();
-- Only what Settings shows: the next digest's bookkeeping is no change.
CREATE TRIGGER sync_user_settings_update AFTER UPDATE ON user_settings
    FOR EACH ROW WHEN ((OLD.push_enabled, OLD.notification_frequency, OLD.notification_times,
                        OLD.notification_weekday, OLD.timezone, OLD.locale)
                       IS DISTINCT FROM
                       (NEW.push_enabled, NEW.notification_frequency, NEW.notification_times,
                        NEW.notification_weekday, NEW.timezone, NEW.locale))
    EXECUTE FUNCTION sync_settings();
CREATE TRIGGER sync_notifications AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW EXECUTE FUNCTION sync_row('notification');
CREATE TRIGGER sync_user_achievements AFTER INSERT ON user_achievements
    FOR EACH ROW EXECUTE FUNCTION sync_achievement();
"""

BACKFILL = """
INSERT INTO sync_changes (user_id, kind, object_id, deleted, xid, seq)
SELECT user_id, kind, object_id, false, pg_current_xact_id()::text::bigint,
       nextval('sync_changes_seq')
FROM (
    SELECT user_id, 'goal' AS kind, id AS object_id FROM goals
    UNION ALL SELECT user_id, 'settings', user_id FROM user_settings
    UNION ALL SELECT user_id, 'notification', id FROM notifications
    UNION ALL SELECT user_id, 'achievement', achievement_id FROM user_achievements
) AS objects
"""

TABLES = {
    "goals": ("sync_goals",),
    "goal_stages": ("sync_goal_stages",),
    "goal_attachments": ("sync_goal_attachments",),
    "goal_reminders": ("sync_goal_reminders_write", "sync_goal_reminders_update"),
    "user_settings": ("sync_user_settings_insert", "sync_user_settings_update"),
    "notifications": ("sync_notifications",),
    "user_achievements": ("sync_user_achievements",),
}
FUNCTIONS = (
    "sync_row()",
    "sync_goal_part()",
    "sync_settings()",
    "sync_achievement()",
    "sync_record(uuid, text, uuid, boolean)",
)


def upgrade() -> None:
    op.execute("CREATE SEQUENCE sync_changes_seq")
    op.execute(
        """
        CREATE TABLE sync_changes (
            user_id uuid NOT NULL,
            kind varchar(16) NOT NULL,
            object_id uuid NOT NULL,
            deleted boolean NOT NULL DEFAULT false,
            xid bigint NOT NULL,
            seq bigint NOT NULL,
            changed_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_sync_changes PRIMARY KEY (user_id, kind, object_id),
            CONSTRAINT fk_sync_changes_user_id_users FOREIGN KEY (user_id)
                REFERENCES users (id) ON DELETE CASCADE,
            CONSTRAINT ck_sync_changes_kind
                CHECK (kind IN ('goal', 'settings', 'notification', 'achievement'))
        )
        """
    )
    # GET /sync: WHERE user_id = ? AND (xid, seq) > cursor AND xid < horizon ORDER BY xid, seq
    op.execute("CREATE INDEX ix_sync_changes_user_id_xid_seq ON sync_changes (user_id, xid, seq)")
    # A list's version (ETag): max(seq) WHERE user_id = ? AND kind = 'goal'
    op.execute("CREATE INDEX ix_sync_changes_user_id_kind_seq ON sync_changes (user_id, kind, seq)")
    # Tombstone retention: WHERE deleted AND changed_at < ?
    op.execute("CREATE INDEX ix_sync_changes_tombstones ON sync_changes (changed_at) WHERE deleted")
    # One command per execute (asyncpg prepares each): split where a new command starts.
    for command in re.split(r";\n(?=\n*(?:CREATE|--))", RECORD.strip()):
        op.execute(command)
    op.execute(BACKFILL)


def downgrade() -> None:
    for table, triggers in TABLES.items():
        for trigger in triggers:
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
    for function in FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
    op.execute("DROP TABLE sync_changes")
    op.execute("DROP SEQUENCE sync_changes_seq")
