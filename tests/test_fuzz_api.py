"""Property-based fuzzing of the whole HTTP API with Schemathesis, against our own OpenAPI document.

Promises under test (docs/reliability-security.md): no input a client can send yields a 500, and
every answer matches the documented contract (status code, content type, body schema, headers).
The bearer scheme is declared in the OpenAPI document, so for every protected operation that
answers 2xx Schemathesis re-sends the request without a token and with a forged one and expects a
refusal (`ignored_auth`).

How it runs: a second application instance (`FUZZ_APP`) is served in-process by Schemathesis's own
ASGI transport, which starts the app's lifespan on Schemathesis's event-loop thread; no port, no
server process. The session `app` fixture (pytest-asyncio's loop) registers the caller, creates the
resources whose ids are fed into path parameters, and truncates the database between operations;
both apps share PostgreSQL, Redis and S3. One pytest test per operation; a server error surfaces as
the application's own traceback, any contract violation as a Schemathesis failure report with a
reproducing curl command.
"""

from __future__ import annotations

import copy as copy_module
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from goaltrack.main import create_app
from helpers import Account

MAX_EXAMPLES = 15  # per operation, fuzzing phase; the examples and coverage phases add their own
SEED = 20240601

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "no-shrink": True,
            "database": "none",
            # The caller's real token is sent with every request; a generated `Authorization`
            # header would only be overwritten, and a "missing header" negative case would then be
            # misreported as "invalid request accepted". `ignored_auth` exercises the scheme instead.
            "with-security-parameters": False,
            # Unknown query parameters are ignored, as HTTP APIs commonly do; the contract only
            # requires unknown *body* fields to be rejected (and bodies are still fuzzed for that).
            "allow-extra-parameters": False,
        },
        "checks": {
            # The schema cannot express business rules: the *current* password, a known IANA zone,
            # an opaque cursor issued by us, a deliverable e-mail domain (`x@y.test` is refused),
            # stage ids of this very goal. Schema-valid but rejected requests are therefore expected.
            "positive_data_acceptance": {"enabled": False},
        },
        # Test data only (per-session JWT secret, throwaway passwords): show it, so that a failure
        # report can be replayed as is.
        "output": {"sanitization": {"enabled": False}},
        "request-timeout": 15,
    }
)

# Built at import (collection) time: the OpenAPI document needs settings only, no services.
FUZZ_APP = create_app()
schema = schemathesis.openapi.from_dict(FUZZ_APP.openapi(), config=CONFIG)
schema.app = FUZZ_APP  # as `schemathesis.openapi.from_asgi` does: cases go to this app in-process

# Ids of resources owned by the caller, set per test by the `owned` fixture, so that generated
# cases also reach the code behind the 404 that a random UUID gets.
REAL_IDS: dict[str, str] = {}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Half of the time, replace generated UUIDs by the ids of the caller's own resources.

    Only a well-formed UUID is replaced, so a deliberately malformed (negative) path parameter
    stays malformed and Schemathesis's expectations about it stay right.
    """
    if not path_parameters:
        return st.just(path_parameters)
    real = {
        name: REAL_IDS[name]
        for name, value in path_parameters.items()
        if name in REAL_IDS and isinstance(value, str) and _UUID.match(value)
    }
    if not real:
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {**path_parameters, **real}])


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str) and value:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))


def _with_nul(body: Any, path: tuple[Any, ...] | None) -> Any:
    if path is None:
        return body
    if not path:  # the body itself is a string
        return "\x00" + body[1:]
    copy = copy_module.deepcopy(body)
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = "\x00" + parent[path[-1]][1:]
    return copy


@schema.hook
def flatmap_body(ctx: Any, body: Any) -> Any:
    """Sometimes put a NUL character into one string of the body.

    Valid JSON and valid against most schemas, yet PostgreSQL refuses it in text columns, so it
    is the classic way to turn a 422 into a 500; random generation hits it only rarely. The first
    character is *replaced*, so lengths stay the same and a negative case stays negative.
    """
    leaves = list(_string_leaves(body))
    if not leaves:
        return st.just(body)
    return st.sampled_from([None, None, *leaves]).map(lambda path: _with_nul(body, path))


@pytest.fixture(scope="module", autouse=True)
def _stop_fuzz_app() -> Iterator[None]:
    yield
    # Close FUZZ_APP's database pool, Redis and S3 clients while those services still run.
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


@pytest.fixture
async def owned(client: Any, user: Account) -> AsyncIterator[Account]:
    """The caller, owning a goal with a stage and a reminder."""
    goal = await client.post(
        "/goals",
        json={"title": "Fuzz target", "reminder": {"remind_time": "09:00", "frequency_days": 1}},
        headers=user.headers,
    )
    assert goal.status_code == 201, goal.text
    goal_id = goal.json()["id"]
    stage = await client.post(
        f"/goals/{goal_id}/stages", json={"title": "First step"}, headers=user.headers
    )
    assert stage.status_code == 201, stage.text
    REAL_IDS.update(
        goal_id=goal_id,
        stage_id=stage.json()["id"],
        reminder_id=goal.json()["reminders"][0]["id"],
    )
    yield user
    REAL_IDS.clear()


@schema.parametrize()
# The caller and their resources are deliberately shared by all examples of one operation.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_fuzz(case: schemathesis.Case, owned: Account) -> None:
    case.call_and_validate(headers=owned.headers)
