"""Property-based fuzzing of the whole HTTP API with Schemathesis, against our own OpenAPI document.

Promises under test (docs/reliability-security.md): no input a client can send yields a 500, and
every answer matches the documented contract (status code, content type, body schema, headers).
Every Schemathesis check is on. In particular:

- `positive_data_acceptance`: a request the document calls valid is not refused with 400 or
  422. The document states the rules the server enforces (text without NUL, visible titles, IANA
  zones, no special-use e-mail domains, upload types, ...: goaltrack.openapi), so a refusal is
  a contract bug. What no schema can say is supplied the way a real client would supply it: the
  caller's *current* password, a reset token we issued, a cursor we issued, the goal's own stage
  ids, files that decode, a new Idempotency-Key for each new request, two different times for
  quiet hours (see `prepare`). One rule stays outside the document: a new password's
  72-byte bcrypt limit (JSON Schema counts characters, not bytes; the description says it), so a
  generated new password is cut to 72 UTF-8 bytes before it is sent (`_within_bcrypt_limit`).
  A second one is below JSON Schema: integers are refused when written with a fraction (`2.0`;
  `StrictInt`, deliberately, tests/test_ai.py), yet JSON Schema 2020-12 (OpenAPI 3.1) calls 2.0 an
  integer and no keyword tells the two spellings apart, so Schemathesis generates it for JSON
  bodies; a positive body writes whole numbers as integers (`_integers_as_integers`). A third
  is a data set: the time zone names the server's tz database knows. The document gives their
  shape and says the rest in words (an open string, so that a client generated today still sends
  a zone tzdata adds tomorrow); the fuzzer is handed the list (`_with_zone_names`).
- `negative_data_rejection`: a request the document calls invalid is refused.
- `ignored_auth`: the bearer scheme is declared, so for every protected operation that answers
  2xx Schemathesis re-sends the request without a token and with a forged one.
- the stateful checks (`use_after_free`, `ensure_resource_availability`) in `test_api_stateful`,
  which follows the document's OpenAPI links (create → get/update/delete, ...), so operations run
  on resources really created in the same scenario by a really registered caller.

How it runs: a second application instance (`FUZZ_APP`) is served in-process by Schemathesis's own
ASGI transport, which starts the app's lifespan on Schemathesis's event-loop thread; no port, no
server process. Both apps share PostgreSQL, Redis and S3, and the session app's autouse fixture
truncates the database between tests. Callers are registered through FUZZ_APP itself. One pytest
test per operation, then the stateful run; a server error surfaces as the application's own
traceback, any contract violation as a Schemathesis failure report with a reproducing curl
command. Bounded: `MAX_EXAMPLES` per operation, `SCENARIOS` × `STEPS` for the state machine, and a
Hypothesis deadline per example and per scenario (a hang fails instead of stalling CI).
"""

from __future__ import annotations

import asyncio
import copy as copy_module
import io
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition, HypothesisException
from PIL import Image
from schemathesis.core import NOT_SET
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import ensure_resource_availability

from goaltrack.auth.security import BCRYPT_MAX_BYTES
from goaltrack.idempotency import IDEMPOTENCY_KEY
from goaltrack.main import create_app
from goaltrack.pagination import Cursor
from goaltrack.schemas import time_zone_names
from goaltrack.sync.service import SyncCursor
from helpers import make_pdf

MAX_EXAMPLES = 15  # per operation, fuzzing phase; the examples and coverage phases add their own
SCENARIOS = 50  # stateful phase: scenarios (each with a freshly registered caller) ...
STEPS = 12  # ... of at most this many linked calls
EXAMPLE_DEADLINE = timedelta(seconds=10)  # one example: a few calls, normally ~0.1 s
SCENARIO_DEADLINE = timedelta(seconds=40)  # one scenario: normally ~1 s
SEED = 20240601
PASSWORD = "correct horse battery"

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
        # Every check, with its default expectations.
        "checks": {"enabled": True},
        "phases": {
            "stateful": {
                # Only the document's own links: the run follows what clients are told.
                "inference": {"algorithms": []},
            },
        },
        # Test data only (per-session JWT secret, throwaway passwords): show it, so that a failure
        # report can be replayed as is.
        "output": {"sanitization": {"enabled": False}},
        "request-timeout": 15,
    }
)

# Built at import (collection) time: the OpenAPI document needs settings only, no services.
FUZZ_APP = create_app()


def _with_zone_names(document: dict[str, Any]) -> dict[str, Any]:
    """The document, with the zones the server's tz database knows listed in `TimeZone` (the
    published document states that rule in words, not as a closed enum: see goaltrack.openapi)."""
    fuzzed = copy_module.deepcopy(document)
    fuzzed["components"]["schemas"]["TimeZone"]["enum"] = time_zone_names()
    return fuzzed


schema = schemathesis.openapi.from_dict(_with_zone_names(FUZZ_APP.openapi()), config=CONFIG)
schema.app = FUZZ_APP  # as `schemathesis.openapi.from_asgi` does: cases go to this app in-process


# --- uploads: files that decode, of every type the document names (HEIC: Pillow cannot write) ---


def _image(image_format: str) -> st.SearchStrategy[bytes]:
    def encode(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", size, color).save(buffer, image_format)
        return buffer.getvalue()

    side = st.integers(1, 16)
    channel = st.integers(0, 255)
    return st.builds(encode, st.tuples(side, side), st.tuples(channel, channel, channel))


schemathesis.openapi.media_type("image/jpeg", _image("JPEG"))
schemathesis.openapi.media_type("image/png", _image("PNG"))
schemathesis.openapi.media_type("image/webp", _image("WEBP"))
schemathesis.openapi.media_type("application/pdf", st.integers(1, 3).map(make_pdf))


# --- the caller: a real user with real resources, registered through FUZZ_APP -------------------


def call(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    media_type: str | None = None,
) -> Response:
    """One request to FUZZ_APP, outside of any generated case."""
    operation = schema[path][method]
    case = operation.Case(
        path_parameters=path_parameters,
        headers=headers,
        body=body if body is not None else NOT_SET,
        media_type=media_type,
    )
    return case.call()


def register(email: str | None = None, password: str = PASSWORD) -> tuple[str, dict[str, Any]]:
    address = email or f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    response = call("POST", "/auth/register", body={"email": address, "password": password})
    assert response.status_code == 201, response.text
    return address, response.json()


@dataclass
class Caller:
    """The user the fuzzer acts as, owning a goal with a stage, a reminder and an attachment."""

    email: str
    password: str
    access_token: str
    ids: dict[str, str] = field(default_factory=dict)
    # Refresh tokens seen in answers (links pass them on; they are real already).
    refresh_tokens: set[str] = field(default_factory=set)
    # A soft-deleted caller's credentials, for POST /account/restore.
    deleted: tuple[str, str] | None = None

    @classmethod
    def provision(cls) -> Caller:
        email, pair = register()
        caller = cls(email, PASSWORD, pair["access_token"], refresh_tokens={pair["refresh_token"]})
        goal = caller.request(
            "POST",
            "/goals",
            body={
                "title": "Fuzz target",
                "reminder": {"remind_time": "09:00", "frequency_days": 1},
            },
        )
        assert goal.status_code == 201, goal.text
        goal_id = goal.json()["id"]
        where = {"goal_id": goal_id}
        stage = caller.request(
            "POST", "/goals/{goal_id}/stages", where, body={"title": "First step"}
        )
        assert stage.status_code == 201, stage.text
        attachment = caller.request(
            "POST",
            "/goals/{goal_id}/attachments",
            where,
            body={"file": make_pdf()},
            media_type="multipart/form-data",
        )
        assert attachment.status_code == 201, attachment.text
        caller.ids = {
            "goal_id": goal_id,
            "stage_id": stage.json()["id"],
            "reminder_id": goal.json()["reminders"][0]["id"],
            "attachment_id": attachment.json()["id"],
        }
        return caller

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def request(
        self,
        method: str,
        path: str,
        path_parameters: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Response:
        return call(method, path, headers=self.headers, path_parameters=path_parameters, **kwargs)

    def take(self, other: Caller) -> None:
        """Become `other` (a fresh caller, after this one deleted itself)."""
        self.__dict__.update(other.__dict__)
        REAL_IDS.update(self.ids)

    def observe(self, case: schemathesis.Case, response: Response, *, renew: bool) -> None:
        """Follow what a call did to the caller: a new password, new tokens, a deletion. With
        `renew`, a deleted caller is replaced by a fresh one (the per-operation tests go on
        with a live user; the state machine's scenarios keep their own history instead)."""
        label = case.operation.label
        status = response.status_code
        body = case.body if isinstance(case.body, dict) else {}
        if 200 <= status < 300 and "refresh_token" in response.text:
            pair = response.json()
            self.refresh_tokens.add(pair["refresh_token"])
            if label == "PUT /account/password":
                self.password = body["new_password"]
                self.access_token = pair["access_token"]
            if label == "POST /account/restore" and self.deleted == (
                body.get("email"),
                body.get("password"),
            ):
                self.deleted = None
                if not renew:  # the scenario goes on as the restored user
                    self.access_token = pair["access_token"]
        if label == "DELETE /account" and status == 202:
            self.deleted = (self.email, self.password)
            if renew:
                self.take(Caller.provision())
        if label == "DELETE /account/data" and status == 204 and renew:
            self.take(Caller.provision())


# Ids of resources owned by the caller, set per test, so that generated cases also reach the code
# behind the 404 that a random UUID gets.
REAL_IDS: dict[str, str] = {}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@schema.hook
def flatmap_path_parameters(ctx: Any, path_parameters: dict[str, Any] | None) -> Any:
    """Two times out of three, replace generated UUIDs by the ids of the caller's own resources.

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
    return st.sampled_from(
        [path_parameters, {**path_parameters, **real}, {**path_parameters, **real}]
    )


# --- what no schema can say, supplied as a real client supplies it ------------------------------

T = TypeVar("T")


class Database:
    """The test's own connection to the application's database, on an event loop of its own (the
    fuzz app's loop belongs to Schemathesis, the session app's to pytest-asyncio)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine: Any = None

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout=30)

    def close(self) -> None:
        if self.engine is not None:
            self.run(self.engine.dispose)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def issue_reset_token(self, email: str) -> str:
        """A password-reset token for `email`, issued as the mail task issues it."""
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        from goaltrack.auth.security import new_opaque_token
        from goaltrack.auth.service import create_password_reset_token, get_user_by_email
        from goaltrack.config import get_settings

        settings = get_settings()
        token = new_opaque_token()

        async def issue() -> None:
            if self.engine is None:
                self.engine = create_async_engine(settings.database_url, pool_size=1)
            async with AsyncSession(self.engine) as session, session.begin():
                user = await get_user_by_email(session, email)
                assert user is not None, email
                now = datetime.now(UTC)
                await create_password_reset_token(session, settings, user, now, token=token)

        self.run(issue)
        return token

    def issue_verification(self, email: str) -> tuple[str, str]:
        """A live verification of `email` for its account (link token, code), as `start` makes
        it (its mail aside)."""
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        from goaltrack.auth.models import EmailVerification
        from goaltrack.auth.security import hash_token
        from goaltrack.auth.service import get_user_by_email
        from goaltrack.auth.verification import secrets_of
        from goaltrack.config import get_settings

        settings = get_settings()
        verification_id = uuid.uuid4()
        token, code = secrets_of(settings, verification_id)

        async def issue() -> None:
            if self.engine is None:
                self.engine = create_async_engine(settings.database_url, pool_size=1)
            async with AsyncSession(self.engine) as session, session.begin():
                user = await get_user_by_email(session, email)
                assert user is not None, email
                session.add(
                    EmailVerification(
                        id=verification_id,
                        user_id=user.id,
                        email=user.email,
                        token_hash=hash_token(token),
                        expires_at=datetime.now(UTC) + timedelta(hours=1),
                    )
                )

        self.run(issue)
        return token, code


DATABASE: Database | None = None


@pytest.fixture(scope="module", autouse=True)
def _services() -> Iterator[None]:
    global DATABASE
    DATABASE = Database()
    yield
    DATABASE.close()
    DATABASE = None
    # Close FUZZ_APP's database pool, Redis and S3 clients while those services still run.
    from schemathesis.python import asgi

    asgi.shutdown_lifespans()


# Request fields holding a password the server checks against the caller's current one.
CURRENT_PASSWORD = {
    "PUT /account/password": "current_password",
    "DELETE /account": "password",
    "DELETE /account/data": "password",
    "PUT /account/email": "password",
}
# Request fields holding a new password (bcrypt's 72-byte limit).
NEW_PASSWORD = {
    "POST /auth/register": "password",
    "POST /auth/reset-password": "new_password",
    "PUT /account/password": "new_password",
}
CURSOR_LISTS = {"GET /goals", "GET /goals/archived", "GET /notifications"}
# Request bodies with quiet hours: `start` and `end` differ (QuietHours' description).
QUIET_HOURS_BODIES = {"PUT /settings", "PUT /settings/notifications"}


def _another_time(clock_time: str) -> str:
    """A valid "HH:MM" other than `clock_time` (a minute later, around midnight)."""
    hours, minutes = divmod((int(clock_time[:2]) * 60 + int(clock_time[3:]) + 1) % 1440, 60)
    return f"{hours:02d}:{minutes:02d}"


def _within_bcrypt_limit(password: str) -> str:
    """The one rule the document states in words only (see the module docstring): at most 72
    bytes in UTF-8. Cut to the longest prefix within it; a prefix is at least 18 characters, so
    still long enough, and it is made non-blank if cutting left whitespace only."""
    if len(password.encode()) <= BCRYPT_MAX_BYTES:
        return password
    cut = password.encode()[:BCRYPT_MAX_BYTES].decode(errors="ignore")
    return cut if cut.strip() else "x" + cut[1:]


def _integers_as_integers(value: Any) -> Any:
    """`2.0` → `2`, anywhere in a JSON body (see the module docstring): no request field is a
    non-integer number, so a whole float only ever stands for an integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integers_as_integers(item) for item in value]
    return value


def prepare(case: schemathesis.Case, caller: Caller) -> None:
    """In a positive case, put in what only a real client knows; in any case, an If-Match that
    lets the write through."""
    if "If-Match" in (case.headers or {}):
        # A generated entity tag is never the resource's: every such write, valid or not, would
        # be a 412 (the precondition is checked before the body; tests/test_conditional.py holds
        # the 412 on every route). `*` lets the write itself be fuzzed.
        case.headers = {**(case.headers or {}), "If-Match": "*"}
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    label = case.operation.label
    body = case.body if isinstance(case.body, dict) else None
    changes: dict[str, Any] = {}
    if body is not None:
        if label in CURRENT_PASSWORD:
            changes[CURRENT_PASSWORD[label]] = caller.password
            # A deletion confirmed by an ID token instead needs one a provider signed: only the
            # password is something the fuzzer's caller has (tests/test_oauth.py has the rest).
            body = {key: value for key, value in body.items() if key != "id_token"}
        if label in NEW_PASSWORD and isinstance(body.get(NEW_PASSWORD[label]), str):
            changes[NEW_PASSWORD[label]] = _within_bcrypt_limit(body[NEW_PASSWORD[label]])
        if label == "POST /auth/reset-password":
            assert DATABASE is not None
            # Someone else's reset: the caller keeps their password and sessions.
            email, _ = register()
            changes["token"] = DATABASE.issue_reset_token(email)
        if label == "POST /auth/verify-email":
            assert DATABASE is not None
            if "code" in body:  # the caller's own (the caller stays who they are)
                changes["code"] = DATABASE.issue_verification(caller.email)[1]
            else:  # someone else's link
                changes["token"] = DATABASE.issue_verification(register()[0])[0]
        if label in {"POST /auth/login", "POST /account/restore"}:
            email, password = caller.deleted or (caller.email, caller.password)
            changes.update(email=email, password=password)
        if label in {"POST /auth/refresh", "POST /auth/logout"} and (
            body.get("refresh_token") not in caller.refresh_tokens
        ):
            # A session of someone else's: refreshing or ending it leaves the caller's alone.
            changes["refresh_token"] = register()[1]["refresh_token"]
        if label == "PUT /goals/{goal_id}/stages/order":
            stage_ids = _stage_ids(caller, (case.path_parameters or {}).get("goal_id"))
            if stage_ids is not None:
                changes["stage_ids"] = stage_ids
        if label in QUIET_HOURS_BODIES:
            quiet = body.get("quiet_hours")
            if isinstance(quiet, dict) and quiet.get("start") == quiet.get("end"):
                # An empty window: the description's rule that no JSON Schema keyword states
                # (one field differing from another); a client sends two different times.
                changes["quiet_hours"] = {**quiet, "end": _another_time(quiet["end"])}
    if body is not None and case.media_type == "application/json":
        # Assigned even when equal: `2.0 == 2` for a dict comparison, not on the wire.
        case.body = _integers_as_integers({**body, **changes})
    if case.headers and IDEMPOTENCY_KEY in case.headers:
        case.headers = {**case.headers, IDEMPOTENCY_KEY: _fresh_key(case.headers[IDEMPOTENCY_KEY])}
    if label in CURSOR_LISTS and "cursor" in (case.query or {}):
        # A cursor as the server issues them (the keyset of a row), instead of random text.
        cursor = Cursor(datetime.now(UTC) - timedelta(days=1), uuid.uuid4()).encode()
        case.query = {**(case.query or {}), "cursor": cursor}
    if label == "GET /sync" and "cursor" in (case.query or {}):
        # A sync cursor as the server issues them (a position in the change log).
        position = SyncCursor(xid=1, seq=1, floor=1, caught_up=int(time.time()))
        case.query = {**(case.query or {}), "cursor": position.encode()}


def _fresh_key(generated: str) -> str:
    """A client sends a new Idempotency-Key with each new request (the same one only when it
    retries that request): keys generated from the pattern repeat across examples, and the same
    key with another body is rightly a 422. The generated characters stay, made unique."""
    return f"{generated[:200]}-{uuid.uuid4().hex}"


def _without_pending_ai_run(caller: Caller, goal_id: str) -> Any:
    """The goal (its GET response) once no AI run of it is pending. An AI run replaces the open
    stages when it ends (POST .../ai-sync): a client waits for it before it edits stages, or the
    stage it just created or listed may be gone by the time its request arrives."""
    where = {"goal_id": goal_id}
    goal = caller.request("GET", "/goals/{goal_id}", where)
    deadline = time.monotonic() + 15
    while goal.status_code == 200 and goal.json()["ai_status"] == "pending":
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
        goal = caller.request("GET", "/goals/{goal_id}", where)
    return goal


def _stage_ids(caller: Caller, goal_id: str | None) -> list[str] | None:
    """Every stage id of the goal, in a new order (a stage is added to a goal without any)."""
    if goal_id is None:
        return None
    where = {"goal_id": goal_id}
    goal = _without_pending_ai_run(caller, goal_id)
    if goal.status_code != 200:
        return None  # not the caller's goal: the 404 is the answer under test
    stage_ids = [stage["id"] for stage in goal.json()["stages"]]
    if not stage_ids:
        added = caller.request("POST", "/goals/{goal_id}/stages", where, body={"title": "Step"})
        if added.status_code != 201:
            return None  # e.g. archived: the server's answer is under test
        stage_ids = [added.json()["id"]]
    return stage_ids[::-1]


# --- NUL characters --------------------------------------------------------------------------


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str) and value:
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_leaves(item, (*path, index))


def _with_nul(body: Any, path: tuple[Any, ...]) -> Any:
    copy = copy_module.deepcopy(body)
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = "\x00" + parent[path[-1]][1:]
    return copy


def assert_nul_refused(case: schemathesis.Case, caller: Caller) -> None:
    """The same valid JSON body with a NUL character in one of its strings is refused (4xx).

    Valid JSON that PostgreSQL cannot store in a text column: the classic way to turn a 422 into
    a 500. The document forbids it (NO_NUL_PATTERN), but random generation seldom produces
    exactly one NUL in an otherwise valid body, so every valid body is tried with one.
    """
    if case.media_type != "application/json" or not isinstance(case.body, dict | list):
        return
    leaves = list(_string_leaves(case.body))
    if not leaves:
        return
    path = leaves[zlib.crc32(repr(case.body).encode()) % len(leaves)]  # stable per body
    headers = {**(case.headers or {}), **caller.headers}
    if IDEMPOTENCY_KEY in headers:  # another body: another request, under a key of its own
        headers[IDEMPOTENCY_KEY] = _fresh_key(headers[IDEMPOTENCY_KEY])
    response = case.operation.Case(
        path_parameters=case.path_parameters,
        query=case.query,
        headers=headers,
        body=_with_nul(case.body, path),
        media_type=case.media_type,
    ).call()
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture
def caller() -> Iterator[Caller]:
    caller = Caller.provision()
    REAL_IDS.update(caller.ids)
    yield caller
    REAL_IDS.clear()


@schema.parametrize()
# The caller and their resources are deliberately shared by all examples of one operation.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=EXAMPLE_DEADLINE)
def test_api_fuzz(case: schemathesis.Case, caller: Caller) -> None:
    prepare(case, caller)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    # The caller's token as an explicit header (not part of the case): `ignored_auth` then knows
    # it is a real credential, and re-sends without it and with a forged one.
    headers = caller.headers
    response = case.call(headers=headers)
    caller.observe(case, response, renew=True)
    case.validate_response(response, headers=headers, transport_kwargs={"headers": headers})
    if positive:
        assert_nul_refused(case, caller)


@dataclass
class StatefulRun:
    scenarios: int = 0
    # Check failures and server errors, in the order met: Hypothesis may hide one behind a
    # FlakyStrategyDefinition when it replays the scenario (see test_api_stateful).
    errors: list[Exception] = field(default_factory=list)


STATEFUL = StatefulRun()


class APIWorkflow(schema.as_state_machine()):  # type: ignore[misc]
    """Scenarios along the document's links, each as a freshly registered caller."""

    caller: Caller
    # Stages created before an AI plan of their goal was asked for: the plan replaces the open
    # stages when it ends, so a later 404 for one of them is the API's right answer.
    stages_of: dict[str, set[str]]
    replaced_by_plan: set[str]

    def setup(self) -> None:
        STATEFUL.scenarios += 1
        self.caller = Caller.provision()
        self.stages_of = {}
        self.replaced_by_plan = set()
        REAL_IDS.clear()
        REAL_IDS.update(self.caller.ids)

    def step(self, input: Any) -> Any:
        try:
            return super().step(input)
        except HypothesisException:
            raise
        except Exception as exc:
            STATEFUL.errors.append(exc)
            raise

    def before_call(self, case: schemathesis.Case) -> None:
        prepare(case, self.caller)
        goal_id = (case.path_parameters or {}).get("goal_id")
        if "/stages" in case.operation.path and isinstance(goal_id, str):
            # Stages are created and used once the goal's AI run is over, as a client does: a
            # stage created while a run is pending is replaced when it ends, and how fast the
            # worker is must not decide whether ensure_resource_availability fails.
            _without_pending_ai_run(self.caller, goal_id)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": self.caller.headers}

    def after_call(self, response: Response, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        self.caller.observe(case, response, renew=False)
        goal_id = (case.path_parameters or {}).get("goal_id")
        label, status = case.operation.label, response.status_code
        if label == "POST /goals/{goal_id}/stages" and status == 201:
            self.stages_of.setdefault(goal_id, set()).add(response.json()["id"])
        if label == "POST /goals/{goal_id}/ai-sync" and status == 202:
            self.replaced_by_plan |= self.stages_of.pop(goal_id, set())

    def validate_response(
        self,
        response: Response,
        case: schemathesis.Case,
        additional_checks: Any = None,
        **kwargs: Any,
    ) -> None:
        # As in test_api_fuzz: the token is an explicit header, known to `ignored_auth`.
        stage_id = (case.path_parameters or {}).get("stage_id")
        replaced = response.status_code == 404 and stage_id in self.replaced_by_plan
        case.validate_response(
            response,
            headers=kwargs.get("headers"),
            additional_checks=additional_checks,
            # Schemathesis sees a stage created and then not found; the AI plan in between
            # replaced it (use_after_free and the status checks still apply).
            excluded_checks=[ensure_resource_availability] if replaced else None,
            transport_kwargs=kwargs,
            recorder=self.recorder,
        )


@pytest.mark.timeout(180)
def test_api_stateful() -> None:
    """`SCENARIOS` scenarios of at most `STEPS` linked calls.

    Which rules a scenario can take depends on what the API answered before (a link is followed
    only from a response that matched it), and the answers are not a function of Hypothesis's
    choices alone: the database and rate limits carry over between scenarios, and Schemathesis
    decides outside Hypothesis's choices whether a step uses a link's value. Hypothesis then may
    stop with FlakyStrategyDefinition ("a bundle that was unexpectedly empty"). Schemathesis's
    own runner counts that as no failure; so does this test, unless a check failed or the server
    erred before it (then that error is raised), and it goes on with fresh seeds until the
    scenarios are done.
    """
    STATEFUL.scenarios = 0
    STATEFUL.errors.clear()
    attempts = 0
    try:
        while STATEFUL.scenarios < SCENARIOS and attempts < 4:
            attempts += 1
            try:
                APIWorkflow.run(
                    settings=settings(
                        APIWorkflow.TestCase.settings,
                        max_examples=SCENARIOS - STATEFUL.scenarios,
                        stateful_step_count=STEPS,
                        deadline=SCENARIO_DEADLINE,
                        derandomize=attempts == 1,  # the first attempt is reproducible
                        database=None,
                        suppress_health_check=list(HealthCheck),
                    )
                )
                break
            except FlakyStrategyDefinition:
                if STATEFUL.errors:
                    raise STATEFUL.errors[0] from None
    finally:
        REAL_IDS.clear()
