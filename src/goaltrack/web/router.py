"""The page the password-reset mail links to, and the app-link files.

The page works without JavaScript: plain forms posted to the server, which answers with a page.
The token never lingers or leaks: the link's GET moves it into an HttpOnly cookie scoped to this
path and redirects to the bare address (out of the address bar, history and any Referer), every
response forbids caching, framing and referrers, the CSP allows no inline script or style, and
the forms carry a double-submit CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError

from goaltrack.auth import service as auth
from goaltrack.auth.dependencies import PasswordsDep
from goaltrack.auth.errors import ResetTokenInvalid
from goaltrack.auth.idempotency import IdempotentRoute
from goaltrack.auth.schemas import PASSWORD_MIN_CHARS, ForgotPasswordRequest
from goaltrack.auth.security import BCRYPT_MAX_BYTES
from goaltrack.clock import Now
from goaltrack.db import SessionDep
from goaltrack.deps import SettingsDep
from goaltrack.errors import NotFound, RateLimited
from goaltrack.i18n import CATALOGUES, negotiate, t, translator
from goaltrack.ratelimit import RateLimiterDep, limit_reset_mails
from goaltrack.schemas import is_blank

router = APIRouter(include_in_schema=False, route_class=IdempotentRoute)

HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(), auto_reload=False
)
TOKEN_COOKIE = "reset_token"
CSRF_COOKIE = "reset_csrf"
PAGE_PATH = "/reset-password"

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page(
    request: Request,
    template: str,
    *,
    locale: str,
    heading: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render a page; every form on it carries a fresh double-submit CSRF token."""
    csrf = secrets.token_urlsafe(32)
    html = TEMPLATES.get_template(template).render(
        locale=locale,
        t=translator(locale),
        rules=t(
            locale,
            "page.rules",
            count=PASSWORD_MIN_CHARS,
            max_bytes=BCRYPT_MAX_BYTES,
            max_cyrillic=BCRYPT_MAX_BYTES // 2,  # two bytes a letter in UTF-8
        ),
        heading=heading,
        csrf=csrf,
        **context,
    )
    headers = {**SECURITY_HEADERS, "Content-Language": locale, "Vary": "Accept-Language"}
    response = HTMLResponse(html, status_code=status_code, headers=headers)
    response.set_cookie(
        CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path=PAGE_PATH,
    )
    return response


async def _token_state(
    request: Request, session: SessionDep, token: str | None, now: datetime
) -> tuple[str, bool]:
    """The page's locale (the token owner's, else the browser's) and whether the token is usable."""
    locale, usable = await auth.reset_token_state(session, token, now) if token else (None, False)
    if locale is None or locale not in CATALOGUES:
        locale = negotiate(request.headers.get("accept-language"))
    return locale, usable


@router.get(PAGE_PATH)
async def reset_page(
    request: Request, session: SessionDep, now: Now, token: str | None = None
) -> Response:
    if token is not None:
        # Out of the address bar at once: the token rides in a cookie only this path receives.
        response = RedirectResponse(PAGE_PATH, status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            TOKEN_COOKIE,
            token[:512],
            httponly=True,
            samesite="lax",  # a link opened from a mail client is a cross-site navigation
            secure=_secure(request),
            path=PAGE_PATH,
            max_age=3600,
        )
        return response
    token = request.cookies.get(TOKEN_COOKIE)
    locale, usable = await _token_state(request, session, token, now)
    if not usable:
        return _page(
            request, "reset_invalid.html", locale=locale, heading=t(locale, "page.invalid.title")
        )
    return _page(request, "reset_form.html", locale=locale, heading=t(locale, "page.title"))


@router.get(f"{PAGE_PATH}/page.css")
async def page_css() -> FileResponse:
    return FileResponse(
        HERE / "static" / "page.css",
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


def _password_problem(password: str, confirm: str, locale: str) -> str | None:
    """What is wrong with the new password, in words; None when nothing is."""
    if is_blank(password):
        return t(locale, "page.error.blank")
    if len(password) < PASSWORD_MIN_CHARS:
        return t(locale, "page.error.too_short", count=PASSWORD_MIN_CHARS)
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        return t(locale, "page.error.too_long", max_bytes=BCRYPT_MAX_BYTES)
    if password != confirm:
        return t(locale, "page.error.mismatch")
    return None


@router.post(PAGE_PATH)
async def submit(
    request: Request,
    session: SessionDep,
    passwords: PasswordsDep,
    settings: SettingsDep,
    limiter: RateLimiterDep,
    now: Now,
    csrf: Annotated[str, Form(max_length=128)] = "",
    action: Annotated[str, Form(max_length=16)] = "reset",
    password: Annotated[str, Form(max_length=1024)] = "",
    password_confirm: Annotated[str, Form(max_length=1024)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    token = request.cookies.get(TOKEN_COOKIE)
    locale, _ = await _token_state(request, session, token, now)
    expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf.encode()):
        template, heading = (
            ("reset_form.html", t(locale, "page.title"))
            if token
            else ("reset_invalid.html", t(locale, "page.invalid.title"))
        )
        return _page(
            request,
            template,
            locale=locale,
            heading=heading,
            status_code=403,
            error=t(locale, "page.error.form"),
        )

    if action == "resend":
        try:
            address = ForgotPasswordRequest(email=email).email
        except ValidationError:
            return _page(
                request,
                "reset_invalid.html",
                locale=locale,
                heading=t(locale, "page.invalid.title"),
                status_code=422,
            )
        try:
            await limit_reset_mails(limiter, request, settings, address)
        except RateLimited:
            return _page(
                request,
                "message.html",
                locale=locale,
                heading=t(locale, "page.sent.title"),
                status_code=429,
                message=t(locale, "page.limited.text"),
            )
        auth.request_password_reset(session, address, now=now)
        return _page(
            request,
            "message.html",
            locale=locale,
            heading=t(locale, "page.sent.title"),
            message=t(locale, "page.sent.text"),
        )

    if token is None:
        return _page(
            request,
            "reset_invalid.html",
            locale=locale,
            heading=t(locale, "page.invalid.title"),
            status_code=400,
        )
    problem = _password_problem(password, password_confirm, locale)
    if problem is not None:
        return _page(
            request,
            "reset_form.html",
            locale=locale,
            heading=t(locale, "page.title"),
            status_code=422,
            error=problem,
        )
    try:
        await auth.reset_password(session, passwords, token=token, new_password=password, now=now)
    except ResetTokenInvalid:
        return _page(
            request,
            "reset_invalid.html",
            locale=locale,
            heading=t(locale, "page.invalid.title"),
            status_code=400,
        )
    response = _page(
        request,
        "message.html",
        locale=locale,
        heading=t(locale, "page.done.title"),
        message=t(locale, "page.done.text"),
        app_url=settings.app_open_url,
    )
    response.delete_cookie(TOKEN_COOKIE, path=PAGE_PATH)
    return response


@router.get("/.well-known/apple-app-site-association")
async def apple_app_site_association(settings: SettingsDep) -> JSONResponse:
    """Universal links: the reset link opens the iOS app where it is installed."""
    app_ids = settings.ios_app_id_list
    if not app_ids:
        raise NotFound
    return JSONResponse(
        {
            "applinks": {
                "details": [{"appIDs": app_ids, "components": [{"/": f"{PAGE_PATH}*"}]}],
            }
        },
        media_type="application/json",
    )


@router.get("/.well-known/assetlinks.json")
async def asset_links(settings: SettingsDep) -> JSONResponse:
    """Android App Links: the same for the Android app (verified by its signing certificate)."""
    fingerprints = settings.android_cert_fingerprints
    if not settings.android_package_name or not fingerprints:
        raise NotFound
    return JSONResponse(
        [
            {
                "relation": ["delegate_permission/common.handle_all_urls"],
                "target": {
                    "namespace": "android_app",
                    "package_name": settings.android_package_name,
                    "sha256_cert_fingerprints": fingerprints,
                },
            }
        ],
        media_type="application/json",
    )
