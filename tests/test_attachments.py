from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from goaltrack.clock import utcnow
from goaltrack.config import get_settings
from goaltrack.deps import get_app_settings, get_storage
from goaltrack.dev.localstack import free_port
from goaltrack.files import service as files
from goaltrack.files.models import FileDeletion
from goaltrack.goals.models import GoalAttachment
from goaltrack.storage import Storage
from helpers import Account, assert_problem, create_goal, make_image, make_pdf, wait_until

JPEG = make_image("JPEG")
PNG = make_image("PNG")
PDF = make_pdf()
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 100


async def upload(
    client: Any, account: Account, goal_id: str, name: str, data: bytes, claimed: str
) -> Any:
    return await client.post(
        f"/goals/{goal_id}/attachments",
        files={"file": (name, data, claimed)},
        headers=account.headers,
    )


async def rows(app: Any, model: Any) -> list[Any]:
    async with app.state.sessionmaker() as session:
        return list(await session.scalars(select(model)))


async def test_upload_detects_type_and_serves_presigned_url(
    client: Any, app: Any, user: Account
) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    response = await upload(
        client, user, goal_id, "../../etc/run.jpg", JPEG, "application/octet-stream"
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body.keys() == {
        "id",
        "file_name",
        "file_type",
        "size",
        "url",
        "content_url",
        "created_at",
    }
    assert (body["file_type"], body["size"], body["file_name"]) == (
        "image/jpeg",
        len(JPEG),
        "run.jpg",
    )
    async with httpx.AsyncClient() as http:
        fetched = await http.get(body["url"])
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(JPEG).digest()
    [row] = await rows(app, GoalAttachment)
    assert row.object_key == f"{row.user_id}/{goal_id}/{body['id']}"
    assert row.file_url.endswith(row.object_key)
    assert await rows(app, FileDeletion) == []  # the upload intent is gone with the commit

    goal = (await client.get(f"/goals/{goal_id}", headers=user.headers)).json()
    assert [a["id"] for a in goal["attachments"]] == [body["id"]]
    listed = (await client.get(f"/goals/{goal_id}/attachments", headers=user.headers)).json()
    assert listed.keys() == {"items", "next_cursor"}
    assert [a["id"] for a in listed["items"]] == [body["id"]]
    assert listed["next_cursor"] is None  # bounded by the per-goal limit: always one page


async def test_pdf_downloads_as_attachment_and_tampered_url_is_refused(
    client: Any, user: Account
) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    body = (await upload(client, user, goal_id, "report.pdf", PDF, "application/pdf")).json()
    assert body["file_type"] == "application/pdf"
    async with httpx.AsyncClient() as http:
        fetched = await http.get(body["url"])
        assert fetched.content == PDF
        assert fetched.headers["content-disposition"].startswith("attachment")
        tampered = body["url"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert (await http.get(tampered)).status_code == 403


async def test_spoofed_type_is_415_and_stores_nothing(client: Any, app: Any, user: Account) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    response = await upload(client, user, goal_id, "photo.png", ELF, "image/png")
    assert_problem(response, 415, "unsupported_file_type")
    assert await rows(app, GoalAttachment) == []
    assert await rows(app, FileDeletion) == []


async def test_oversized_upload_is_413_and_stores_nothing(
    client: Any, app: Any, user: Account
) -> None:
    small = app.state.settings.model_copy(update={"max_upload_bytes": 1024})
    app.dependency_overrides[get_app_settings] = lambda: small
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    exact = await upload(
        client, user, goal_id, "ok.png", PNG + b"\x00" * (1024 - len(PNG)), "image/png"
    )
    assert exact.status_code == 201
    response = await upload(client, user, goal_id, "big.png", PNG + b"\x00" * 1024, "image/png")
    assert_problem(response, 413, "file_too_large")
    assert len(await rows(app, GoalAttachment)) == 1


async def test_attachment_limit(client: Any, app: Any, user: Account) -> None:
    limited = app.state.settings.model_copy(update={"max_attachments_per_goal": 1})
    app.dependency_overrides[get_app_settings] = lambda: limited
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    assert (await upload(client, user, goal_id, "a.png", PNG, "image/png")).status_code == 201
    assert_problem(
        await upload(client, user, goal_id, "b.png", PNG, "image/png"), 409, "attachment_limit"
    )


async def test_upload_validation_errors(client: Any, user: Account) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    missing = await client.post(
        f"/goals/{goal_id}/attachments", files={"other": ("a.png", PNG)}, headers=user.headers
    )
    assert_problem(missing, 422, "validation_error")
    not_multipart = await client.post(
        f"/goals/{goal_id}/attachments", json={"file": "x"}, headers=user.headers
    )
    assert_problem(not_multipart, 422, "validation_error")


async def test_storage_down_is_503_and_leaves_no_row(
    client: Any, app: Any, user: Account, stack: Any
) -> None:
    down = Storage(
        app.state.settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    )
    await down.start()
    app.dependency_overrides[get_storage] = lambda: down
    try:
        goal_id = (await create_goal(client, user, title="Proof"))["id"]
        response = await upload(client, user, goal_id, "a.png", PNG, "image/png")
        assert_problem(response, 503, "storage_unavailable")
    finally:
        await down.close()
    assert await rows(app, GoalAttachment) == []
    # The intent stays: if the object reached S3 after all, the sweep removes it once the
    # request is surely over (nothing orphaned).
    [intent] = await rows(app, FileDeletion)
    assert intent.not_before > utcnow() + timedelta(minutes=10)
    async with app.state.sessionmaker() as session, session.begin():
        done, _ = await files.sweep(
            session, app.state.storage, utcnow() + files.UPLOAD_INTENT_GRACE
        )
    assert done == 1
    assert await rows(app, FileDeletion) == []


async def test_row_insert_failure_after_upload_deletes_the_object(app: Any, user: Account) -> None:
    """Fault injection: the database write after the upload fails."""
    from goaltrack.goals import attachments

    async def failing(session: Any, object_key: str) -> None:
        raise RuntimeError("injected database failure")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        goal_id = (await create_goal(client, user, title="Proof"))["id"]
        original = attachments.files.forget_upload_intents
        attachments.files.forget_upload_intents = failing  # type: ignore[assignment]
        try:
            response = await upload(client, user, goal_id, "a.png", PNG, "image/png")
        finally:
            attachments.files.forget_upload_intents = original  # type: ignore[assignment]
    assert_problem(response, 500, "internal_error")
    assert await rows(app, GoalAttachment) == []
    [intent] = await rows(app, FileDeletion)
    assert not await app.state.storage.exists(
        intent.object_key
    )  # removed at once, not left to the sweep


async def test_delete_attachment_removes_the_object_through_the_outbox(
    client: Any, app: Any, user: Account
) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    body = (await upload(client, user, goal_id, "a.png", PNG, "image/png")).json()
    [row] = await rows(app, GoalAttachment)
    assert await app.state.storage.exists(row.object_key)
    response = await client.delete(
        f"/goals/{goal_id}/attachments/{body['id']}", headers=user.headers
    )
    assert response.status_code == 204
    assert await rows(app, GoalAttachment) == []

    async def gone() -> bool:
        return (
            not await app.state.storage.exists(row.object_key)
            and await rows(app, FileDeletion) == []
        )

    await wait_until(gone)
    assert_problem(
        await client.delete(f"/goals/{goal_id}/attachments/{body['id']}", headers=user.headers),
        404,
        "not_found",
    )


async def test_deleting_a_goal_removes_its_files(client: Any, app: Any, user: Account) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    for name in ("a.png", "b.pdf"):
        await upload(client, user, goal_id, name, PNG if name.endswith("png") else PDF, "x/y")
    keys = [row.object_key for row in await rows(app, GoalAttachment)]
    assert (await client.delete(f"/goals/{goal_id}", headers=user.headers)).status_code == 204

    async def gone() -> bool:
        return not any([await app.state.storage.exists(key) for key in keys])

    await wait_until(gone)


async def test_objects_deleted_while_s3_is_down_go_once_it_is_back(
    client: Any, app: Any, user: Account, stack: Any
) -> None:
    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    body = (await upload(client, user, goal_id, "a.png", PNG, "image/png")).json()
    [row] = await rows(app, GoalAttachment)
    stack.s3.stop()
    try:
        response = await client.delete(
            f"/goals/{goal_id}/attachments/{body['id']}", headers=user.headers
        )
        assert response.status_code == 204  # the row's deletion never waits for S3
        assert await rows(app, GoalAttachment) == []

        async def attempted() -> bool:
            pending = await rows(app, FileDeletion)
            return len(pending) == 1 and pending[0].attempts >= 1

        await wait_until(attempted)
    finally:
        stack.s3.start()
    assert await app.state.storage.exists(row.object_key)
    # The next sweep (beat, every SCHEDULER_INTERVAL_SECONDS) finds the row due after its backoff.
    async with app.state.sessionmaker() as session:
        [pending] = list(await session.scalars(select(FileDeletion)))
    async with app.state.sessionmaker() as session, session.begin():
        done, _ = await files.sweep(session, app.state.storage, pending.not_before)
    assert done == 1
    assert not await app.state.storage.exists(row.object_key)
    async with app.state.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(FileDeletion)) == 0


async def test_sweep_task_runs_on_the_worker(celery_app: Any, app: Any) -> None:
    key = f"orphans/{uuid.uuid4()}"
    await app.state.storage.put(key, b"x", size=1, content_type="image/png")
    async with app.state.sessionmaker() as session, session.begin():
        session.add(FileDeletion(object_key=key))
    assert get_settings().s3_bucket == app.state.settings.s3_bucket
    celery_app.send_task("files.process_file_deletions")

    async def gone() -> bool:
        return not await app.state.storage.exists(key)

    await wait_until(gone)


async def test_parallel_uploads_do_not_exhaust_a_small_pool(user: Account) -> None:
    """Each upload holds one pooled connection at a time: with a pool of 3, three uploads to one
    goal at once all succeed (they used to wait on each other's second connection)."""
    from goaltrack.main import create_app

    app = create_app(get_settings().model_copy(update={"database_pool_size": 3}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            goal_id = (await create_goal(client, user, title="Proof"))["id"]
            responses = await asyncio.wait_for(
                asyncio.gather(
                    *(upload(client, user, goal_id, f"{i}.png", PNG, "image/png") for i in range(3))
                ),
                timeout=15,
            )
    assert [r.status_code for r in responses] == [201, 201, 201]


async def test_a_live_objects_intents_all_go_when_its_row_commits(app: Any) -> None:
    key = f"exports/{uuid.uuid4()}.zip"
    async with app.state.sessionmaker() as session, session.begin():
        await files.record_upload_intent(session, key, utcnow())  # a first, failed attempt
        await files.record_upload_intent(session, key, utcnow())  # the retry
        files.queue_prefix_deletion(session, key)  # a prefix is not an intent
    async with app.state.sessionmaker() as session, session.begin():
        await files.forget_upload_intents(session, key)
    [left] = await rows(app, FileDeletion)
    assert left.is_prefix


async def test_polyglot_is_stored_and_served_as_its_detected_type(
    client: Any, user: Account
) -> None:
    from urllib.parse import parse_qs, urlsplit

    goal_id = (await create_goal(client, user, title="Proof"))["id"]
    response = await upload(client, user, goal_id, "poly.html", PNG, "text/html")
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["file_name"], body["file_type"]) == ("poly.png", "image/png")
    assert parse_qs(urlsplit(body["url"]).query)["response-content-type"] == ["image/png"]
    async with httpx.AsyncClient() as http:
        fetched = await http.get(body["url"])
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.headers["content-disposition"] == "inline; filename*=UTF-8''poly.png"
