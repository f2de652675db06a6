"""Hot routes (goaltrack.hotpath): answered without FastAPI's per-request machinery, with the
same answers: the content as the response model's JSON, the headers the endpoint set, the app's
own problems for its errors, FastAPI's 422 for a parameter that does not validate, and the
ordinary path while dependency overrides are in use. The app's own hot routes are the ones its
routers declare, and still in the OpenAPI document with their response models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel

from goaltrack.errors import NotFound, install_error_handlers
from goaltrack.hotpath import HotRouteError, HotRoutes, hot
from goaltrack.main import create_app

SERVED_BY_FASTAPI = "x-served-by-fastapi"


class Item(BaseModel):
    name: str
    size: int


async def item_size(size: Annotated[int, Query(ge=1, le=10)] = 3) -> int:
    return size


async def transaction(request: Request) -> AsyncIterator[list[str]]:
    """Stands for the request's session: what happened to it goes to app.state.log."""
    log: list[str] = request.app.state.log
    log.append("begin")
    try:
        yield log
    except BaseException as exc:
        log.append(f"rollback after {type(exc).__name__}")
        raise
    else:
        log.append("commit")


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.middleware("http")
    async def mark(request: Request, call_next: Any) -> Response:
        # Only requests that went down the ordinary stack pass here.
        response: Response = await call_next(request)
        response.headers[SERVED_BY_FASTAPI] = "yes"
        return response

    @app.get("/items/{name}", response_model=Item)
    @hot
    async def get_item(
        name: str, size: Annotated[int, Depends(item_size)], response: Response
    ) -> Any:
        if name == "missing":
            raise NotFound
        if name == "unchanged":
            return Response(status_code=304)
        response.headers["ETag"] = '"7"'
        return {"name": name, "size": size}

    @app.post("/items", status_code=201, response_model=Item)
    @hot
    async def create_item(
        item: Item, log: Annotated[list[str], Depends(transaction)], response: Response
    ) -> Any:
        log.append(f"insert {item.name}")
        if item.name == "missing":
            raise NotFound
        response.headers["Location"] = f"/items/{item.name}"
        return item.model_dump()

    app.state.log = []
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: HotRoutes(build(), fastapi=app)  # type: ignore[method-assign]
    return app


@pytest.fixture
async def hot_client() -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = _app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield app, client


async def test_a_hot_route_answers_as_fastapi_would(
    hot_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = hot_client
    response = await client.get("/items/cup?size=5")
    assert response.status_code == 200
    assert SERVED_BY_FASTAPI not in response.headers
    assert response.content == b'{"name":"cup","size":5}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["etag"] == '"7"'
    assert (await client.get("/items/unchanged")).status_code == 304

    missing = await client.get("/items/missing")
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert SERVED_BY_FASTAPI not in missing.headers

    # A parameter that does not validate: FastAPI's own answer (the app's 422 problem).
    invalid = await client.get("/items/cup?size=11")
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["query", "size"]
    assert invalid.headers[SERVED_BY_FASTAPI] == "yes"

    app.dependency_overrides[item_size] = lambda: 9
    overridden = await client.get("/items/cup")
    assert overridden.json() == {"name": "cup", "size": 9}
    assert overridden.headers[SERVED_BY_FASTAPI] == "yes"


async def test_a_hot_write_takes_its_json_body_and_closes_its_transaction(
    hot_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = hot_client
    created = await client.post("/items", json={"name": "cup", "size": 2})
    assert created.status_code == 201
    assert SERVED_BY_FASTAPI not in created.headers
    assert created.content == b'{"name":"cup","size":2}'
    assert created.headers["location"] == "/items/cup"
    assert app.state.log == ["begin", "insert cup", "commit"]

    app.state.log.clear()
    missing = await client.post("/items", json={"name": "missing", "size": 2})
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert SERVED_BY_FASTAPI not in missing.headers
    assert app.state.log == ["begin", "insert missing", "rollback after NotFound"]

    # A body that does not validate, is not JSON or is not sent as JSON: FastAPI's own answers
    # (the body the hot path read is handed on).
    app.state.log.clear()
    invalid = await client.post("/items", json={"name": "cup", "size": "big"})
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["body", "size"]
    assert invalid.headers[SERVED_BY_FASTAPI] == "yes"
    assert "commit" not in app.state.log
    broken = await client.post(
        "/items", content=b'{"name": "cup",', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.headers[SERVED_BY_FASTAPI] == "yes"
    as_text = await client.post(
        "/items", content=b'{"name":"cup","size":1}', headers={"content-type": "text/plain"}
    )
    assert as_text.headers[SERVED_BY_FASTAPI] == "yes"
    charset = await client.post(
        "/items",
        content=b'{"name":"mug","size":1}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert charset.status_code == 201
    assert SERVED_BY_FASTAPI not in charset.headers


async def test_a_route_before_a_hot_one_that_may_take_its_requests_is_refused() -> None:
    app = _app()

    @app.get("/items/special")
    async def special() -> dict[str, str]:
        return {}

    # Declared after: the ordinary router would give /items/special to the earlier hot route
    # too, so this order is no conflict; the other way round is.
    app.router.routes.insert(0, app.router.routes.pop())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(HotRouteError, match="/items/special"):
            await client.get("/items/cup")


async def test_a_path_is_given_to_the_first_hot_route_that_takes_it() -> None:
    """Hot routes are looked up by path (a literal one only among the routes that take it): the
    answer is still the first route's in the app's order, as the ordinary router would give it."""
    app = _app()

    @app.get("/items/special")
    @hot
    async def special_after() -> dict[str, str]:
        return {"route": "literal, after the template"}

    @app.get("/things/new")
    @hot
    async def new_thing() -> dict[str, str]:
        return {"route": "literal"}

    @app.get("/things/{name}")
    @hot
    async def thing(name: str) -> dict[str, str]:
        return {"route": f"template {name}"}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        special = await client.get("/items/special")
        assert special.json() == {"name": "special", "size": 3}  # /items/{name} came first
        assert SERVED_BY_FASTAPI not in special.headers
        assert (await client.get("/things/new")).json() == {"route": "literal"}
        assert (await client.get("/things/old")).json() == {"route": "template old"}
        unknown = await client.get("/nothing/here")
        assert unknown.status_code == 404
        assert unknown.headers[SERVED_BY_FASTAPI] == "yes"


def test_the_apps_hot_routes_are_in_its_document() -> None:
    app = create_app()
    hot_routes = {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if getattr(context.endpoint, "goaltrack_hot_route", False)
        for method in context.methods or ()
    }
    assert hot_routes == {
        ("GET", "/goals"),
        ("GET", "/goals/archived"),
        ("GET", "/goals/{goal_id:goal}"),
        ("GET", "/notifications"),
        ("GET", "/achievements"),
        ("GET", "/sync"),
        ("POST", "/goals"),
        ("PUT", "/goals/{goal_id:goal}/stages/{stage_id:stage}/complete"),
        ("PUT", "/goals/{goal_id:goal}/stages/{stage_id:stage}/uncomplete"),
    }
    paths = app.openapi()["paths"]
    for method, path in hot_routes:
        operation = paths[path.replace(":goal", "").replace(":stage", "")][method.lower()]
        answer = operation["responses"]["201" if method == "POST" else "200"]
        assert "$ref" in str(answer["content"]["application/json"])
    assert "requestBody" in paths["/goals"]["post"]
