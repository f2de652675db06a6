"""The benchmark's peers (bench/peer_template.py, sync in the official template's style, and
bench/peer_async.py, async routes on an AsyncSession) serve our four hot reads with the same JSON
as our API: a comparison is only fair between apps that do the same work.

State is written through our API, then every read (and the pages after a cursor) goes to both
apps with the same token; the parsed bodies must be equal field by field, but for the signature
time in attachment URLs. The peer runs in-process, on the test stack's PostgreSQL, Redis and S3.
"""

from __future__ import annotations

import copy
import importlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from goaltrack.achievements.models import Achievement
from goaltrack.notifications.models import Notification
from helpers import Account, bench_app_env, create_goal, make_image, make_pdf

ROOT = Path(__file__).resolve().parent.parent
STATS_KEY = "achievements:stats"
# What changes with the moment of signing (X-Amz-Credential holds the date).
SIGNING_TIME_PARAMS = {"X-Amz-Date", "X-Amz-Signature", "X-Amz-Credential"}


@pytest.fixture(scope="module", params=["bench.peer_template", "bench.peer_async"])
def peer(app: Any, request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """A peer, imported with the environment our in-process API was built from."""
    settings = app.state.settings
    env = bench_app_env(settings)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        if settings.s3_public_endpoint_url:
            patch.setenv("S3_PUBLIC_ENDPOINT_URL", settings.s3_public_endpoint_url)
        else:
            patch.delenv("S3_PUBLIC_ENDPOINT_URL", raising=False)
        patch.syspath_prepend(str(ROOT))
        module = importlib.import_module(request.param)
    for name in env:
        assert getattr(module.settings, name.lower()) == getattr(settings, name.lower()), name
    yield module
    if request.param == "bench.peer_template":  # the async peer's close in its lifespan
        module.engine.dispose()
        module.redis_client.close()


@pytest.fixture
async def peer_client(peer: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    async with peer.app.router.lifespan_context(peer.app):
        transport = httpx.ASGITransport(app=peer.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://peer") as http:
            yield http


def _url_parts(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, strict_parsing=True))
    credential = params["X-Amz-Credential"].split("/")
    assert len(credential) == 5, credential  # key / date / region / service / aws4_request
    return {
        "base": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "params": {k: v for k, v in params.items() if k not in SIGNING_TIME_PARAMS},
        "credential": credential[:1] + credential[2:],
    }


def _masked(body: dict[str, Any]) -> dict[str, Any]:
    """The body with each attachment URL reduced to what does not depend on the signing time."""
    body = copy.deepcopy(body)
    for attachment in body.get("attachments", []):
        attachment["url"] = _url_parts(attachment["url"])
    return body


class Both:
    """One account's requests to our API and to the peer."""

    def __init__(self, ours: httpx.AsyncClient, peer: httpx.AsyncClient, account: Account):
        self.ours, self.peer, self.account = ours, peer, account

    async def get(self, path: str, status: int = 200) -> tuple[Any, Any]:
        ours = await self.ours.get(path, headers=self.account.headers)
        theirs = await self.peer.get(path, headers=self.account.headers)
        assert ours.status_code == status, (path, ours.text)
        assert theirs.status_code == status, (path, theirs.text)
        return ours.json(), theirs.json()

    async def same(self, path: str) -> dict[str, Any]:
        """GET `path` from both; the bodies must be equal. Returns ours."""
        ours, theirs = await self.get(path)
        assert _masked(theirs) == _masked(ours), path
        return dict(ours)

    async def same_pages(self, path: str, limit: int) -> list[dict[str, Any]]:
        """Every page of a list, following our API's cursor; each page equal in both apps."""
        pages = [await self.same(f"{path}?limit={limit}")]
        while (cursor := pages[-1]["next_cursor"]) is not None:
            pages.append(await self.same(f"{path}?limit={limit}&cursor={cursor}"))
        return pages


async def _post(client: httpx.AsyncClient, account: Account, path: str, **kwargs: Any) -> Any:
    response = await client.post(path, headers=account.headers, **kwargs)
    assert response.status_code == 201, response.text
    return response.json()


async def _seed(client: httpx.AsyncClient, app: Any, account: Account) -> dict[str, Any]:
    """Goals (one with stages, attachments and reminders; one archived), notifications (two at
    the same instant, one read), and the achievements' statistics in Redis."""
    headers = account.headers
    goal = await create_goal(
        client,
        account,
        title="Run a half marathon",
        description="Three runs a week.",
        deadline="2027-02-28",
    )
    stages = [
        await _post(client, account, f"/goals/{goal['id']}/stages", json={"title": title})
        for title in ("Buy shoes", "Run 10 km")
    ]
    done = await client.put(
        f"/goals/{goal['id']}/stages/{stages[0]['id']}/complete", headers=headers
    )
    assert done.status_code == 200, done.text
    png = make_image("PNG")
    for name, data, claimed in (
        ("proof 😀.png", png, "image/png"),
        ("plan.pdf", make_pdf(), "application/pdf"),
    ):
        await _post(
            client,
            account,
            f"/goals/{goal['id']}/attachments",
            files={"file": (name, data, claimed)},
        )
    for remind_time in ("07:30", "06:15"):  # listed by time of day, not by creation
        await _post(
            client,
            account,
            f"/goals/{goal['id']}/reminders",
            json={"remind_time": remind_time, "frequency_days": 2},
        )
    for title in ("Read 24 books", "Learn Spanish"):
        await create_goal(client, account, title=title)
    archived = await create_goal(client, account, title="Put away")
    response = await client.put(f"/goals/{archived['id']}/archive", headers=headers)
    assert response.status_code == 200, response.text

    me = await client.get("/account", headers=headers)
    assert me.status_code == 200, me.text
    user_id = uuid.UUID(me.json()["id"])
    instant = datetime(2026, 3, 29, 1, 0, 0, 120000, tzinfo=UTC)
    rows = [
        {"at": instant, "read": False, "data": {"active_goals": 3}},
        {"at": instant, "read": True, "data": {"active_goals": 2}},  # a tie: ordered by id
        {
            "at": datetime(2026, 3, 28, 9, 30, tzinfo=UTC),
            "read": False,
            "data": {"active_goals": 1},
        },
    ]
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            insert(Notification).values(
                [
                    {
                        "user_id": user_id,
                        "type": "digest",
                        "title": f"Digest {n}",
                        "body": "Your goals this week",
                        "data": row["data"],
                        "is_read": row["read"],
                        "created_at": row["at"],
                    }
                    for n, row in enumerate(rows)
                ]
            )
        )
        codes = list(await session.scalars(select(Achievement.code).order_by(Achievement.position)))
    assert len(codes) >= 3
    holders = {codes[0]: 1, codes[1]: 2}  # 33.3 %, 66.7 %, and 0.0 % for the rest
    await app.state.redis.set(STATS_KEY, json.dumps({"users": 3, "holders": holders}))
    return {"goal": goal, "archived": archived, "png": png, "codes": codes}


async def test_the_peer_answers_the_hot_reads_as_our_api_does(
    client: httpx.AsyncClient,
    peer_client: httpx.AsyncClient,
    app: Any,
    register: Callable[..., Any],
    other_user: Account,
) -> None:
    account: Account = await register(locale="ru")
    seeded = await _seed(client, app, account)
    goal_id = seeded["goal"]["id"]
    both = Both(client, peer_client, account)

    # GET /goals: the default page, then pages of two after a cursor.
    goals = await both.same("/goals")
    assert [item["title"] for item in goals["items"]] == [
        "Learn Spanish",
        "Read 24 books",
        "Run a half marathon",
    ]
    assert goals["next_cursor"] is None
    pages = await both.same_pages("/goals", limit=2)
    assert [len(page["items"]) for page in pages] == [2, 1]
    assert [item["id"] for page in pages for item in page["items"]] == [
        item["id"] for item in goals["items"]
    ]

    # GET /goals/{goal_id}: children in order, attachment URLs signed alike.
    detail = await both.same(f"/goals/{goal_id}")
    assert (detail["progress"], detail["deadline"]) == (50, "2027-02-28")
    assert [(s["title"], s["is_completed"]) for s in detail["stages"]] == [
        ("Buy shoes", True),
        ("Run 10 km", False),
    ]
    assert [r["remind_time"] for r in detail["reminders"]] == ["06:15", "07:30"]
    assert [a["file_type"] for a in detail["attachments"]] == ["image/png", "application/pdf"]
    _, peer_detail = await both.get(f"/goals/{goal_id}")
    png_url = peer_detail["attachments"][0]["url"]
    assert _url_parts(png_url)["params"]["response-content-disposition"].startswith("inline;")
    async with httpx.AsyncClient() as s3:  # the peer's signature is valid: S3 serves the file
        download = await s3.get(png_url)
    assert download.status_code == 200, download.text
    assert download.content == seeded["png"]
    assert download.headers["content-type"] == "image/png"
    await both.same(f"/goals/{goals['items'][0]['id']}")  # no children
    await both.same(f"/goals/{seeded['archived']['id']}")
    # A goal that is not the caller's (or none at all) is a 404 in both.
    strangers = await create_goal(client, other_user)
    await both.get(f"/goals/{strangers['id']}", status=404)
    await both.get(f"/goals/{uuid.uuid4()}", status=404)

    # GET /notifications: the seeded ones and those the achievements wrote, newest first.
    feed = await both.same("/notifications")
    assert feed["unread_count"] == len(feed["items"]) - 1 >= 3
    assert feed["next_cursor"] is None
    pages = await both.same_pages("/notifications", limit=2)
    assert [item["id"] for page in pages for item in page["items"]] == [
        item["id"] for item in feed["items"]
    ]
    assert len(pages) >= 3
    await both.same_pages("/notifications", limit=1)  # the tie split across two pages

    # GET /achievements: the catalogue in Russian, what the caller earned, the shares of users.
    listed = await both.same("/achievements")
    items = {item["code"]: item for item in listed["items"]}
    assert [item["code"] for item in listed["items"]] == seeded["codes"]
    assert listed["stats_available"] is True
    codes = seeded["codes"]
    assert [items[code]["percent_of_users"] for code in codes[:3]] == [33.3, 66.7, 0.0]
    assert items["first_goal"]["title"] == "Первая цель"
    assert items["first_goal"]["earned"] is True
    assert items["first_goal"]["earned_at"] is not None
    assert any(not item["earned"] for item in listed["items"])

    # Without the statistics in Redis the peer serves the catalogue without percentages.
    await app.state.redis.delete(STATS_KEY)
    response = await peer_client.get("/achievements", headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.json()["stats_available"] is False
    assert {item["percent_of_users"] for item in response.json()["items"]} == {None}

    # A malformed cursor is refused by both.
    await both.get("/goals?cursor=bm90LWEtY3Vyc29y", status=422)
    await both.get("/notifications?cursor=!!!", status=422)

    # Logging out ends the session: its access token is refused by both, on every route.
    logout = await client.post("/auth/logout", json={"refresh_token": account.refresh_token})
    assert logout.status_code == 204, logout.text
    for path in ("/goals", f"/goals/{goal_id}", "/notifications", "/achievements"):
        await both.get(path, status=401)
        assert (await peer_client.get(path)).status_code == 401
