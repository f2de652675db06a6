"""The chaos run's consistency check (ops/consistency.py) on a tiny real state: all zeros when the
state is consistent, and each planted inconsistency counted where it belongs."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from helpers import (
    Account,
    add_stages,
    create_goal,
    make_image,
    wait_for_idle_worker,
    wait_until,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for ops/

from ops import consistency


async def _complete(client: Any, user: Account, goal_id: str, stage: dict[str, Any]) -> None:
    response = await client.put(
        f"/goals/{goal_id}/stages/{stage['id']}/complete", headers=user.headers
    )
    assert response.status_code == 200, response.text


async def test_consistency_check_is_zero_then_catches_planted_faults(
    app: Any, client: Any, user: Account, stack: Any
) -> None:
    started = datetime.now(UTC)
    done = await create_goal(client, user)
    for stage in await add_stages(client, user, done["id"], 2):
        await _complete(client, user, done["id"], stage)
    upload = await client.post(
        f"/goals/{done['id']}/attachments",
        files={"file": ("proof.png", make_image(), "image/png")},
        headers=user.headers,
    )
    assert upload.status_code == 201, upload.text
    half = await create_goal(client, user)
    first, _ = await add_stages(client, user, half["id"], 2)
    await _complete(client, user, half["id"], first)
    user_id = (await client.get("/account", headers=user.headers)).json()["id"]
    prefix = f"{user_id}/"  # the bucket is shared with other tests: this user's objects only
    s3 = {
        "endpoint_url": stack.s3.endpoint_url,
        "access_key": stack.s3.access_key,
        "secret_key": stack.s3.secret_key,
    }

    async def run_check() -> consistency.CheckResult:
        objects = await asyncio.to_thread(consistency.list_objects, **s3, prefix=prefix)
        options = consistency.CheckOptions(settled_before=started)
        async with app.state.engine.connect() as connection:
            return await consistency.check(connection, objects, options, object_prefix=prefix)

    clean = await run_check()
    assert clean.ok, clean.report()
    assert clean.totals["completed_goals"] == 1
    assert clean.totals["attachments"] == clean.totals["s3_objects"] == 1

    # A goal marked completed at 50 %, an AI run pending for a day, an outbox row never sent,
    # and an object nobody's row names.
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE goals SET completed_at = now() WHERE id = :id"), {"id": half["id"]}
        )
        await connection.execute(
            text(
                "INSERT INTO ai_runs (id, user_id, goal_id, max_stages, status, created_at)"
                " VALUES (:id, :user, :goal, 5, 'pending', :at)"
            ),
            {
                "id": uuid.uuid4(),
                "user": user_id,
                "goal": half["id"],
                "at": started - timedelta(days=1),
            },
        )
        await connection.execute(
            text(
                "INSERT INTO task_outbox (id, name, args, not_before, attempts, created_at)"
                " VALUES (:id, 'auth.send_password_changed', '[]', :at, 0, :at)"
            ),
            {"id": uuid.uuid4(), "at": started - timedelta(minutes=1)},
        )
    await asyncio.to_thread(_put_object, s3, f"{prefix}{half['id']}/{uuid.uuid4()}")

    planted = await run_check()
    assert not planted.ok
    assert {name: count for name, count in planted.counts.items() if count} == {
        "completed_goal_not_at_100": 1,
        "ai_run_pending_past_deadline": 1,
        "task_outbox_unsent": 1,
        "object_without_row": 1,
    }, planted.report()
    assert planted.examples["completed_goal_not_at_100"] == [half["id"]]


def _put_object(s3: dict[str, str], key: str) -> None:
    import boto3
    from botocore.config import Config

    boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    ).put_object(Bucket="goaltrack", Key=key, Body=b"orphan")


async def test_consistency_counts_every_mail_and_push(
    app: Any, client: Any, user: Account, mailbox: Any, fcm: Any
) -> None:
    """The mails the SMTP server got and the pushes FCM got, against what the database says was
    owed: all zeros for a registration (its verification mail) and a completed goal (its
    achievement, pushed to the phone registered before); then a mail lost, a push sent twice and
    a push claimed but never answered are each counted."""
    device = "ops-smoke-" + uuid.uuid4().hex
    response = await client.post(
        "/devices", json={"token": device, "platform": "android"}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    goal = await create_goal(client, user)
    for stage in await add_stages(client, user, goal["id"], 1):
        await _complete(client, user, goal["id"], stage)
    await mailbox.wait_for(user.email, verification=True)
    await wait_until(lambda: bool(fcm.messages_to(device)), timeout=30)
    await wait_for_idle_worker(app.state.redis)

    def received() -> consistency.Deliveries:
        mails = Counter(
            address.addr_spec.lower()
            for message in mailbox.messages
            for address in message["To"].addresses
        )
        pushes = Counter(
            (record["message"]["data"]["notification_id"], record["message"]["token"])
            for record in fcm.messages
            if record["status"] == 200
        )
        return consistency.Deliveries(mails=mails, pushes=pushes)

    async def run_check(deliveries: consistency.Deliveries) -> consistency.CheckResult:
        async with app.state.engine.connect() as connection:
            return await consistency.check(connection, None, deliveries=deliveries)

    clean = await run_check(received())
    assert clean.ok, clean.report()
    assert clean.totals["mails_received"] == 1
    assert clean.totals["pushes_received"] >= 1

    deliveries = received()
    deliveries.mails[user.email.lower()] -= 1
    twice = next(iter(deliveries.pushes))
    deliveries.pushes[twice] += 1
    async with app.state.engine.begin() as connection:
        await connection.execute(
            text("UPDATE push_deliveries SET outcome = 'sending' WHERE notification_id = :id"),
            {"id": twice[0]},
        )
    planted = await run_check(deliveries)
    assert {name: count for name, count in planted.counts.items() if count} == {
        "mail_missing": 1,
        "push_sent_twice": 1,
        "push_claimed_unanswered": 1,
    }, planted.report()
    assert planted.examples["push_sent_twice"] == [" ".join(twice)]
