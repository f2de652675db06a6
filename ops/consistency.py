"""The consistency check after a chaos run: every count must be zero, or the run fails.

- goals: every completed goal is at 100 %, every goal at 100 % is completed, and each goal's
  progress and stage counters agree with its stage rows (progress = floor(100 * done / all));
- files: every attachment (and export) row has its S3 object, and every object has its row,
  unless a file_deletions row covers it (an upload intent or a queued deletion) that is not
  overdue; overdue file_deletions rows count too;
- reminders: none still due past the scheduler's grace (missed), none skipped as late, and for
  each reminder as many `reminder` notifications as ledger rows (reminder_deliveries) that name
  one, each ledger row's notification present, each reminder notification in the ledger (once
  per reminder and local date is the unique index itself); digests: none missed;
- AI: no run `pending` past its deadline (AI_TIMEOUT_SECONDS + the stale sweep's margin +
  two ticks), and no goal `pending` without a pending run;
- outbox: no task_outbox row from before `settled_before` (the end of the load, after a drain
  period) but those held for later (quiet hours), or, without it, none overdue (its lease or its
  hold ran out more than two ticks ago);
- with what the SMTP sink and the FCM fake received (`Deliveries`, a run of `python -m ops`):
  every address got exactly as many mails as verifications were started for it (a registration
  or an address change: the mix's only mails); every notification made after its user's device
  was registered reached that device exactly once, and each push recorded `sent` arrived; no
  push stays claimed (`sending`) without an answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

EXAMPLES = 5
# ai.fail_stale_runs fails a pending run this long after its deadline (goaltrack.ai.tasks).
AI_STALE_MARGIN = timedelta(seconds=60)


@dataclass
class CheckOptions:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    scheduler_interval: timedelta = timedelta(seconds=60)
    ai_timeout: timedelta = timedelta(seconds=90)
    # task_outbox rows created before this must be gone (None: only overdue rows count).
    settled_before: datetime | None = None

    @property
    def grace(self) -> timedelta:
        """Two ticks and some: what the scheduler and the sweeps may legitimately lag."""
        return 2 * self.scheduler_interval + timedelta(seconds=30)


@dataclass
class Deliveries:
    """What left the system: mails by recipient address, pushes by (notification id, token)."""

    mails: Counter[str]
    pushes: Counter[tuple[str, str]]


MAILS_EXPECTED = "SELECT lower(email), count(*) FROM email_verifications GROUP BY 1"
# The pushes owed: a notification of a user with push on, to each device that user had
# registered by then (a device registered later may or may not be reached: the task picks the
# devices when it runs).
PUSHES_EXPECTED = """
    SELECT n.id::text, d.token FROM notifications n
    JOIN devices d ON d.user_id = n.user_id
    JOIN user_settings s ON s.user_id = n.user_id
    WHERE s.push_enabled AND n.created_at >= d.created_at
    """
PUSHES_RECORDED_SENT = """
    SELECT p.notification_id::text, d.token FROM push_deliveries p
    JOIN devices d ON d.id = p.device_id WHERE p.outcome = 'sent'
    """
PUSHES_CLAIMED_UNANSWERED = (
    "SELECT notification_id::text || ' ' || device_id::text FROM push_deliveries"
    " WHERE outcome = 'sending'"
)


@dataclass
class CheckResult:
    counts: dict[str, int]
    examples: dict[str, list[str]]
    totals: dict[str, int]

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "examples": {k: v for k, v in self.examples.items() if v},
            "totals": self.totals,
        }

    def report(self) -> str:
        width = max(len(name) for name in self.counts)
        lines = [f"{name:<{width}}  {count}" for name, count in self.counts.items()]
        lines.append("totals: " + ", ".join(f"{k}={v}" for k, v in self.totals.items()))
        lines.append("consistency: " + ("OK (all zeros)" if self.ok else "FAILED"))
        return "\n".join(lines)


# name -> SQL returning one identifying column per offending row
QUERIES: dict[str, str] = {
    "completed_goal_not_at_100": (
        "SELECT id::text FROM goals WHERE completed_at IS NOT NULL AND progress <> 100"
    ),
    "goal_at_100_not_completed": (
        "SELECT id::text FROM goals WHERE progress = 100 AND completed_at IS NULL"
    ),
    "goal_progress_not_matching_stages": """
        SELECT g.id::text FROM goals g
        LEFT JOIN (
            SELECT goal_id, count(*) AS total, count(*) FILTER (WHERE is_completed) AS done
            FROM goal_stages GROUP BY goal_id
        ) s ON s.goal_id = g.id
        WHERE g.stage_count <> coalesce(s.total, 0)
           OR g.completed_stage_count <> coalesce(s.done, 0)
           OR g.progress <> CASE WHEN coalesce(s.total, 0) = 0 THEN 0
                                 ELSE 100 * s.done / s.total END
        """,
    "reminder_missed": (
        "SELECT id::text FROM goal_reminders WHERE next_fire_at < :cutoff ORDER BY next_fire_at"
    ),
    "reminder_skipped_late": (
        "SELECT id::text FROM reminder_deliveries"
        " WHERE kind = 'reminder' AND notification_id IS NULL"
    ),
    "reminder_sent_count_not_ledger_count": """
        WITH sent AS (
            SELECT (data->>'reminder_id')::uuid AS reminder_id, count(*) AS n
            FROM notifications WHERE type = 'reminder' GROUP BY 1
        ), recorded AS (
            SELECT reminder_id, count(*) AS n FROM reminder_deliveries
            WHERE kind = 'reminder' AND notification_id IS NOT NULL GROUP BY 1
        )
        SELECT r.id::text FROM goal_reminders r
        LEFT JOIN sent ON sent.reminder_id = r.id
        LEFT JOIN recorded ON recorded.reminder_id = r.id
        WHERE coalesce(sent.n, 0) <> coalesce(recorded.n, 0)
        """,
    "ledger_row_without_notification": """
        SELECT d.id::text FROM reminder_deliveries d
        WHERE d.notification_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.id = d.notification_id)
        """,
    "reminder_notification_without_ledger_row": """
        SELECT n.id::text FROM notifications n
        JOIN goal_reminders r ON r.id = (n.data->>'reminder_id')::uuid
        WHERE n.type = 'reminder'
          AND NOT EXISTS (SELECT 1 FROM reminder_deliveries d WHERE d.notification_id = n.id)
        """,
    "reminder_sent_twice_same_local_date": """
        SELECT reminder_id::text FROM reminder_deliveries WHERE kind = 'reminder'
        GROUP BY reminder_id, local_date HAVING count(*) > 1
        """,
    "digest_missed": "SELECT user_id::text FROM user_settings WHERE next_digest_at < :cutoff",
    "ai_run_pending_past_deadline": (
        "SELECT id::text FROM ai_runs WHERE status = 'pending' AND created_at < :ai_cutoff"
    ),
    "goal_ai_pending_without_run": """
        SELECT g.id::text FROM goals g WHERE g.ai_status = 'pending'
          AND NOT EXISTS (SELECT 1 FROM ai_runs r WHERE r.goal_id = g.id AND r.status = 'pending')
        """,
    "file_deletion_overdue": ("SELECT object_key FROM file_deletions WHERE not_before < :cutoff"),
}
# A held row (a push waiting for the end of quiet hours) is not late before its time.
OUTBOX_SETTLED = (
    "SELECT name || ' ' || id::text FROM task_outbox"
    " WHERE created_at < :settled AND NOT (held AND not_before >= :settled)"
)
OUTBOX_OVERDUE = "SELECT name || ' ' || id::text FROM task_outbox WHERE not_before < :cutoff"

TOTALS = {
    "goals": "SELECT count(*) FROM goals",
    "completed_goals": "SELECT count(*) FROM goals WHERE completed_at IS NOT NULL",
    "stages": "SELECT count(*) FROM goal_stages",
    "attachments": "SELECT count(*) FROM goal_attachments",
    "reminders": "SELECT count(*) FROM goal_reminders",
    "reminders_sent": (
        "SELECT count(*) FROM reminder_deliveries"
        " WHERE kind = 'reminder' AND notification_id IS NOT NULL"
    ),
    "notifications": "SELECT count(*) FROM notifications",
    "ai_runs": "SELECT count(*) FROM ai_runs",
    "ai_runs_failed": "SELECT count(*) FROM ai_runs WHERE status = 'failed'",
    "task_outbox": "SELECT count(*) FROM task_outbox",
    "file_deletions": "SELECT count(*) FROM file_deletions",
}


async def check(
    connection: AsyncConnection,
    objects: Iterable[str] | None,
    options: CheckOptions | None = None,
    *,
    object_prefix: str = "",
    deliveries: Deliveries | None = None,
) -> CheckResult:
    """`objects`: every key in the bucket (under `object_prefix`), or None to skip the S3 part;
    `deliveries`: what the fakes received, or None to skip the mail and push part."""
    options = options or CheckOptions()
    params = {
        "cutoff": options.now - options.grace,
        "ai_cutoff": options.now - options.ai_timeout - AI_STALE_MARGIN - options.grace,
        "settled": options.settled_before,
    }
    offending: dict[str, list[str]] = {}
    for name, sql in QUERIES.items():
        offending[name] = await _ids(connection, sql, params)
    outbox_sql = OUTBOX_SETTLED if options.settled_before else OUTBOX_OVERDUE
    offending["task_outbox_unsent"] = await _ids(connection, outbox_sql, params)
    totals = {
        name: int((await connection.execute(text(sql))).scalar_one())
        for name, sql in TOTALS.items()
    }
    if objects is not None:
        files = await _file_checks(connection, set(objects), object_prefix, options)
        offending.update(files)
        totals["s3_objects"] = len(set(objects))
    if deliveries is not None:
        offending.update(await _delivery_checks(connection, deliveries))
        totals["mails_received"] = sum(deliveries.mails.values())
        totals["pushes_received"] = sum(deliveries.pushes.values())
    return CheckResult(
        counts={name: len(ids) for name, ids in offending.items()},
        examples={name: ids[:EXAMPLES] for name, ids in offending.items()},
        totals=totals,
    )


async def _delivery_checks(
    connection: AsyncConnection, deliveries: Deliveries
) -> dict[str, list[str]]:
    expected_mails = {
        address: int(count)
        for address, count in (await connection.execute(text(MAILS_EXPECTED))).all()
    }
    addresses = sorted(expected_mails.keys() | deliveries.mails.keys())
    owed = {(row[0], row[1]) for row in (await connection.execute(text(PUSHES_EXPECTED))).all()}
    sent = {(row[0], row[1]) for row in await connection.execute(text(PUSHES_RECORDED_SENT))}
    return {
        "mail_missing": [a for a in addresses if deliveries.mails[a] < expected_mails.get(a, 0)],
        "mail_sent_twice": [a for a in addresses if deliveries.mails[a] > expected_mails.get(a, 0)],
        "push_missing": sorted(" ".join(pair) for pair in owed if not deliveries.pushes[pair]),
        "push_sent_twice": sorted(
            " ".join(pair) for pair, count in deliveries.pushes.items() if count > 1
        ),
        "push_recorded_sent_not_received": sorted(
            " ".join(pair) for pair in sent if not deliveries.pushes[pair]
        ),
        "push_claimed_unanswered": await _ids(connection, PUSHES_CLAIMED_UNANSWERED, {}),
    }


async def _ids(connection: AsyncConnection, sql: str, params: dict[str, Any]) -> list[str]:
    statement = text(sql)
    used = {key: value for key, value in params.items() if f":{key}" in sql}
    return [str(row[0]) for row in await connection.execute(statement, used)]


async def _file_checks(
    connection: AsyncConnection, objects: set[str], prefix: str, options: CheckOptions
) -> dict[str, list[str]]:
    like = prefix.replace("%", r"\%").replace("_", r"\_") + "%"
    rows = set(
        await _ids(
            connection,
            "SELECT object_key FROM goal_attachments WHERE object_key LIKE :like"
            " UNION ALL SELECT object_key FROM data_exports"
            " WHERE object_key IS NOT NULL AND object_key LIKE :like",
            {"like": like},
        )
    )
    # Objects a file_deletions row accounts for: an upload intent (the request may still be
    # committing) or a queued deletion, exact or by prefix (a deleted account's folder).
    pending = await connection.execute(text("SELECT object_key, is_prefix FROM file_deletions"))
    exact, prefixes = set(), []
    for key, is_prefix in pending:
        (prefixes.append(key) if is_prefix else exact.add(key))
    orphans = sorted(
        key
        for key in objects - rows
        if key not in exact and not any(key.startswith(p) for p in prefixes)
    )
    return {
        "attachment_row_without_object": sorted(rows - objects),
        "object_without_row": orphans,
    }


def list_objects(
    endpoint_url: str,
    access_key: str,
    secret_key: str,
    bucket: str = "goaltrack",
    prefix: str = "",
    region: str = "us-east-1",
) -> set[str]:
    """Every key in the bucket under `prefix` (synchronous boto3)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


async def run(
    database_url: str,
    *,
    s3: dict[str, str] | None,
    options: CheckOptions | None = None,
    deliveries: Deliveries | None = None,
) -> CheckResult:
    """The whole check against a database URL and (optionally) the bucket and the deliveries."""
    from sqlalchemy.ext.asyncio import create_async_engine

    objects = await asyncio.to_thread(list_objects, **s3) if s3 else None
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await check(connection, objects, options, deliveries=deliveries)
    finally:
        await engine.dispose()
