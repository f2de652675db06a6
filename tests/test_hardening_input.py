"""Input hardening (only what the contract says is accepted) and production hygiene (security
headers, no-store on token responses, no server header, docs and CORS settings)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from goaltrack.config import Settings
from goaltrack.schemas import ClockTime, IsoDate, TimeZoneName
from helpers import Account, assert_problem, create_goal, serving

# --- A1: "HH:MM" with ASCII digits only ---------------------------------------------------------

NON_ASCII_TIMES = [
    "٠٩:٣٠",  # Arabic-Indic digits
    "۰۹:۳۰",  # Extended Arabic-Indic (Persian) digits
    "０９:３０",  # fullwidth digits
    "09:3٠",  # one non-ASCII digit is enough
    "१२:००",  # Devanagari digits
    "09:30\n",
]


@pytest.mark.parametrize("value", NON_ASCII_TIMES)
def test_clock_time_is_ascii_digits_only(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(ClockTime).validate_python(value)


def test_clock_time_still_reads_hh_mm() -> None:
    adapter = TypeAdapter(ClockTime)
    assert [adapter.validate_python(v).isoformat() for v in ("00:00", "09:30", "23:59")] == [
        "00:00:00",
        "09:30:00",
        "23:59:00",
    ]


@pytest.mark.parametrize("value", NON_ASCII_TIMES[:3])
async def test_remind_time_and_digest_times_refuse_non_ascii_digits(
    client: Any, user: Account, value: str
) -> None:
    goal = await create_goal(client, user)
    assert_problem(
        await client.post(
            f"/goals/{goal['id']}/reminders",
            json={"remind_time": value, "frequency_days": 1},
            headers=user.headers,
        ),
        422,
        "validation_error",
    )
    assert_problem(
        await client.post(
            "/goals",
            json={"title": "Run", "reminder": {"remind_time": value, "frequency_days": 1}},
            headers=user.headers,
        ),
        422,
        "validation_error",
    )
    assert_problem(
        await client.put(
            "/settings/notifications/frequency",
            json={"times": [value], "frequency": "daily"},
            headers=user.headers,
        ),
        422,
        "validation_error",
    )
    assert (await client.get(f"/goals/{goal['id']}", headers=user.headers)).json()[
        "reminders"
    ] == []


# --- A2: deadline is YYYY-MM-DD only ------------------------------------------------------------

NOT_CALENDAR_DATES = [
    "2026-W01-1",  # ISO week date, 10 characters, read by date.fromisoformat
    "2026W011",
    "2026-001",  # ordinal date
    "2026001",
    "20260105",
    "２０２６-０１-０５",  # fullwidth digits
    "٢٠٢٦-٠١-٠٥",  # Arabic-Indic digits
    "2026-01-05\n",
    "2026-01-05T00:00",
]


@pytest.mark.parametrize("value", NOT_CALENDAR_DATES)
def test_iso_date_is_calendar_date_only(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(IsoDate).validate_python(value)


async def test_deadline_refuses_week_and_ordinal_dates(client: Any, user: Account) -> None:
    goal = await create_goal(client, user, deadline="2026-01-05")
    assert goal["deadline"] == "2026-01-05"
    for value in NOT_CALENDAR_DATES:
        assert_problem(
            await client.post(
                "/goals", json={"title": "Run", "deadline": value}, headers=user.headers
            ),
            422,
            "validation_error",
        )
        assert_problem(
            await client.put(
                f"/goals/{goal['id']}", json={"deadline": value}, headers=user.headers
            ),
            422,
            "validation_error",
        )
    unchanged = await client.get(f"/goals/{goal['id']}", headers=user.headers)
    assert unchanged.json()["deadline"] == "2026-01-05"


def test_date_schema_documents_the_pattern() -> None:
    schema = TypeAdapter(IsoDate).json_schema()
    assert schema["pattern"] == "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


# --- A3: real IANA zone names only --------------------------------------------------------------

NOT_ZONES = ["localtime", "Factory", "posixrules", "posix/Europe/Berlin", "right/UTC", "/etc/UTC"]
LEGACY_ZONES = ["UTC", "Etc/GMT+5", "Etc/UTC", "US/Eastern", "GB", "EST5EDT", "Asia/Kolkata"]


@pytest.mark.parametrize("value", NOT_ZONES)
def test_time_zone_refuses_files_that_are_not_zones(value: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(TimeZoneName).validate_python(value)


@pytest.mark.parametrize("value", [*LEGACY_ZONES, "America/Argentina/Buenos_Aires"])
def test_time_zone_keeps_real_and_legacy_names(value: str) -> None:
    assert TypeAdapter(TimeZoneName).validate_python(value) == value


async def test_settings_and_register_refuse_localtime_and_factory(
    client: Any, user: Account
) -> None:
    for zone in ("localtime", "Factory"):
        assert_problem(
            await client.put("/settings", json={"timezone": zone}, headers=user.headers),
            422,
            "validation_error",
        )
        assert_problem(
            await client.post(
                "/auth/register",
                json={
                    "email": f"zone-{secrets.token_hex(4)}@example.com",
                    "password": "correct horse battery",
                    "timezone": zone,
                },
            ),
            422,
            "validation_error",
        )
    assert (await client.get("/settings", headers=user.headers)).json()["timezone"] == "UTC"
    for zone in LEGACY_ZONES:
        response = await client.put("/settings", json={"timezone": zone}, headers=user.headers)
        assert response.status_code == 200, response.text
        assert response.json()["timezone"] == zone


# --- A4: titles need a visible character ---------------------------------------------------------

INVISIBLE_TITLES = [
    "\u200b",  # zero-width space
    "\u200b\u200c\u200d\u2060\ufeff",  # ZWSP, ZWNJ, ZWJ, word joiner, BOM
    " \u200b\t\u200b ",
    "\u00a0\u2003\u3000",  # no-break, em and ideographic spaces
    "\u2028\u2029",  # line and paragraph separators
    "\u202e\u200f\u061c",  # bidi controls
    "\u00ad",  # soft hyphen
    "\u3164",  # Hangul filler
    "\u2800",  # Braille blank
    "\u0301",  # a combining accent on nothing
    "\x01\x7f",
]


@pytest.mark.parametrize("title", INVISIBLE_TITLES)
async def test_invisible_titles_are_blank(client: Any, user: Account, title: str) -> None:
    goal = await create_goal(client, user)
    stage = await client.post(
        f"/goals/{goal['id']}/stages", json={"title": "Warm up"}, headers=user.headers
    )
    assert stage.status_code == 201
    requests = [
        ("POST", "/goals", {"title": title}),
        ("PUT", f"/goals/{goal['id']}", {"title": title}),
        ("POST", f"/goals/{goal['id']}/stages", {"title": title}),
        ("PUT", f"/goals/{goal['id']}/stages/{stage.json()['id']}", {"title": title}),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, headers=user.headers)
        assert_problem(response, 422, "validation_error")


@pytest.mark.parametrize("title", ["\u200bRun\u200b", "e\u0301", "🏃", "👩\u200d💻", " Run "])
async def test_visible_titles_are_stored_as_given(client: Any, user: Account, title: str) -> None:
    goal = await create_goal(client, user, title=title)
    assert goal["title"] == title
    stage = await client.post(
        f"/goals/{goal['id']}/stages", json={"title": title}, headers=user.headers
    )
    assert stage.status_code == 201
    assert stage.json()["title"] == title


# --- A5: device tokens are FCM-shaped, and whatever registers can be deleted --------------------

FCM_TOKEN = "cR2d3kS9Qy6x5c7B8vZ1aQ:APA91bF" + "Zq7-x_9Kp2" * 14


@pytest.mark.parametrize(
    "token",
    ["abc/def", "/", "abc%2Fdef", "a?b", "a#b", ".", "..", ".hidden", "a+b=", "a\\b", "x" * 1025],
)
async def test_device_token_must_be_a_path_safe_fcm_token(
    client: Any, user: Account, token: str
) -> None:
    assert_problem(
        await client.post(
            "/devices", json={"token": token, "platform": "android"}, headers=user.headers
        ),
        422,
        "validation_error",
    )


async def test_a_real_fcm_token_registers_and_deletes(client: Any, user: Account) -> None:
    created = await client.post(
        "/devices", json={"token": FCM_TOKEN, "platform": "android"}, headers=user.headers
    )
    assert created.status_code == 201, created.text
    assert (await client.delete(f"/devices/{FCM_TOKEN}", headers=user.headers)).status_code == 204
    assert_problem(
        await client.delete(f"/devices/{FCM_TOKEN}", headers=user.headers), 404, "not_found"
    )


# --- B1, B2: security headers and no-store ------------------------------------------------------


def _wrap(app: ASGIApp, *, hsts: bool) -> ASGIApp:
    from goaltrack.middleware import Edge

    return Edge(app, hsts=hsts, json_limit=1024, multipart_limit=1024, read_timeout=5)


OWN_CSP = "default-src 'none'; style-src 'self'"


async def _json(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def _problem(request: Request) -> Response:
    return Response(b'{"status": 404}', status_code=404, media_type="application/problem+json")


async def _html_with_own_headers(request: Request) -> Response:
    return HTMLResponse(
        "<p>reset</p>",
        headers={
            "Content-Security-Policy": OWN_CSP,
            "Cache-Control": "no-store",
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


async def _docs(request: Request) -> Response:
    return HTMLResponse("<script src='https://cdn.example/swagger.js'></script>")


async def _plain(request: Request) -> Response:
    return Response(b"hello", media_type="text/plain")


async def _stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": '
        yield b"1}"

    return StreamingResponse(chunks(), media_type="application/json")


async def _tokens(request: Request) -> Response:
    return JSONResponse({"access_token": "a", "refresh_token": "r"})


TOKEN_ROUTES = [
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("POST", "/auth/refresh"),
    ("PUT", "/account/password"),
    ("POST", "/account/restore"),
]

TINY = Starlette(
    routes=[
        Route("/json", _json),
        Route("/problem", _problem),
        Route("/reset-password", _html_with_own_headers),
        Route("/docs", _docs),
        Route("/openapi.json", _json),
        Route("/plain", _plain),
        Route("/stream", _stream),
        Route("/auth/logout", _tokens, methods=["POST"]),
        Route("/account/password", _tokens, methods=["GET", "PUT"]),
        *(Route(path, _tokens, methods=[method]) for method, path in TOKEN_ROUTES),
    ]
)


def _client(app: ASGIApp, *, https: bool = False) -> httpx.AsyncClient:
    base_url = "https://api.example.com" if https else "http://api.example.com"
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


BASELINE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
JSON_CSP = "default-src 'none'; frame-ancestors 'none'"


@pytest.mark.parametrize("path", ["/json", "/problem", "/stream"])
async def test_json_responses_get_the_security_headers_and_csp(path: str) -> None:
    async with _client(_wrap(TINY, hsts=False)) as client:
        response = await client.get(path)
    for name, value in BASELINE.items():
        assert response.headers[name] == value
    assert response.headers["content-security-policy"] == JSON_CSP
    assert "strict-transport-security" not in response.headers
    assert "cache-control" not in response.headers  # only the token routes
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]


async def test_streamed_body_passes_through_unchanged() -> None:
    async with _client(_wrap(TINY, hsts=False)) as client:
        response = await client.get("/stream")
    assert response.json() == {"a": 1}


async def test_headers_a_response_set_are_never_replaced() -> None:
    async with _client(_wrap(TINY, hsts=False)) as client:
        response = await client.get("/reset-password")
    assert response.headers.get_list("content-security-policy") == [OWN_CSP]
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/plain"])
async def test_no_csp_on_docs_or_non_json(path: str) -> None:
    async with _client(_wrap(TINY, hsts=False)) as client:
        response = await client.get(path)
    assert response.status_code == 200
    assert "content-security-policy" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("method", "path"), TOKEN_ROUTES)
async def test_token_responses_are_no_store(method: str, path: str) -> None:
    async with _client(_wrap(TINY, hsts=False)) as client:
        response = await client.request(method, path)
    assert response.status_code == 200
    assert response.headers.get_list("cache-control") == ["no-store"]
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-security-policy"] == JSON_CSP


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/auth/logout"), ("GET", "/account/password")]
)
async def test_other_routes_are_not_forced_to_no_store(method: str, path: str) -> None:
    async with _client(_wrap(TINY, hsts=False)) as client:
        response = await client.request(method, path)
    assert "cache-control" not in response.headers
    assert "pragma" not in response.headers


@pytest.mark.parametrize(
    ("hsts", "https", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
async def test_hsts_only_when_on_and_over_https(hsts: bool, https: bool, expected: bool) -> None:
    async with _client(_wrap(TINY, hsts=hsts), https=https) as client:
        response = await client.get("/json")
    assert response.headers.get("strict-transport-security") == (
        "max-age=63072000; includeSubDomains" if expected else None
    )


async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await _wrap(inner, hsts=True)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


async def test_real_token_routes_through_the_middleware(app: Any) -> None:
    """The table's paths are the application's: the real routes, wrapped as main.py will."""
    email = f"headers-{secrets.token_hex(4)}@example.com"
    password = "correct horse battery"
    async with _client(_wrap(app, hsts=True), https=True) as client:
        register = await client.post("/auth/register", json={"email": email, "password": password})
        assert register.status_code == 201, register.text
        login = await client.post("/auth/login", json={"email": email, "password": password})
        refresh = await client.post(
            "/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
        )
        headers = {"Authorization": f"Bearer {refresh.json()['access_token']}"}
        changed = await client.put(
            "/account/password",
            json={"current_password": password, "new_password": "a new password"},
            headers=headers,
        )
        for response in (register, login, refresh, changed):
            assert response.status_code in (200, 201), response.text
            assert response.headers["cache-control"] == "no-store"
            assert response.headers["pragma"] == "no-cache"
            assert response.headers["content-security-policy"] == JSON_CSP
            assert response.headers["strict-transport-security"].startswith("max-age=63072000")
        health = await client.get("/health")
        assert "cache-control" not in health.headers
        assert health.headers["x-frame-options"] == "DENY"
        problem = await client.get("/goals")  # 401 problem+json
        assert problem.status_code == 401
        assert problem.headers["content-security-policy"] == JSON_CSP
        page = await client.get("/reset-password")  # HTML with its own CSP
        assert page.status_code == 200
        [csp] = page.headers.get_list("content-security-policy")
        assert "style-src 'self'" in csp


# --- B3: no "server: uvicorn" ------------------------------------------------------------------


@pytest.mark.timeout(240)  # the server's start on a busy machine
async def test_serve_turns_the_server_header_off(tmp_path: Path) -> None:
    """`goaltrack serve` itself, as production runs it: no `server: uvicorn` in its answers."""
    async with serving(tmp_path) as base_url, httpx.AsyncClient() as http:
        response = await http.get(f"{base_url}/health")
    assert response.status_code == 200
    assert "server" not in response.headers


# --- B4, B5, B6: settings -----------------------------------------------------------------------

PRODUCTION = {
    "app_env": "production",
    "jwt_secret": secrets.token_urlsafe(48),
    "mail_server": "smtp.example.com",
    "s3_secret_access_key": "a-real-minio-password",
    "password_reset_url": "https://app.example.com/reset?token={token}",
}


def test_docs_are_off_in_production_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCS_ENABLED", raising=False)
    assert Settings(**PRODUCTION).docs_on is False
    assert Settings(**PRODUCTION, docs_enabled=True).docs_on is True
    assert Settings(app_env="development").docs_on is True
    assert Settings(app_env="test").docs_on is True
    assert Settings(app_env="development", docs_enabled=False).docs_on is False
    monkeypatch.setenv("DOCS_ENABLED", "true")
    assert Settings(**PRODUCTION).docs_on is True


@pytest.mark.parametrize(
    "secret",
    ["x" * 64, "ab" * 32, "abcdefg" * 8, "0123456" * 6, "xXxXxXxXxXxXxXxXxXxXxXxXxXxXxXxX"],
)
def test_production_refuses_a_repetitive_jwt_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(**{**PRODUCTION, "jwt_secret": secret})


def test_production_accepts_a_random_jwt_secret() -> None:
    assert Settings(**{**PRODUCTION, "jwt_secret": secrets.token_hex(16)}).app_env == "production"
    # Outside production a repetitive secret is the developer's business.
    assert Settings(app_env="development", jwt_secret="x" * 32).app_env == "development"


def test_cors_origins_default_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORS_ORIGINS", raising=False)
    assert Settings().cors_origin_list == []
    settings = Settings(cors_origins=" https://app.example.com, http://localhost:3000 ,")
    assert settings.cors_origin_list == ["https://app.example.com", "http://localhost:3000"]
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example.com,https://b.example.com:8443")
    assert Settings().cors_origin_list == ["https://a.example.com", "https://b.example.com:8443"]


@pytest.mark.parametrize(
    "origins",
    [
        "*",
        "https://app.example.com/",
        "https://app.example.com/path",
        "app.example.com",
        "https://app.example.com https://b.example.com",
        "ftp://app.example.com",
    ],
)
def test_cors_origins_must_be_origins(origins: str) -> None:
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        Settings(cors_origins=origins)


def _cors_app(settings: Settings) -> ASGIApp:
    """The CORSMiddleware line proposed for main.py, around the tiny app."""
    return CORSMiddleware(
        TINY,
        allow_origins=settings.cors_origin_list,
        allow_methods=["GET", "POST", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        expose_headers=["Retry-After", "X-Request-ID", "Idempotency-Replayed"],
        allow_credentials=False,
        max_age=600,
    )


async def test_cors_from_settings() -> None:
    settings = Settings(cors_origins="https://app.example.com")
    async with _client(_cors_app(settings)) as client:
        preflight = await client.options(
            "/account/password",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-credentials" not in preflight.headers
        other = await client.get("/json", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
        simple = await client.get("/json", headers={"Origin": "https://app.example.com"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "retry-after" in simple.headers["access-control-expose-headers"].lower()
        keyed = await client.options(
            "/goals",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert keyed.status_code == 200
        exposed = simple.headers["access-control-expose-headers"].lower()
        assert "idempotency-replayed" in exposed
