"""The password-reset page: plain HTTP checks (headers, CSRF, cookies, app links, redaction) and
the whole flow in a real headless browser (the distribution's Chromium, JavaScript off)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from goaltrack.config import get_settings
from goaltrack.dev.localstack import free_port
from goaltrack.main import create_app
from goaltrack.redaction import RedactTokens
from helpers import Account, installed

SCREENSHOTS = Path(__file__).parent.parent / "docs" / "screenshots"


def reset_token(message: Any) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()
    link = re.search(r"https?://\S+", text)
    assert link is not None
    return parse_qs(urlsplit(link.group(0)).query)["token"][0]


async def mail_token(client: Any, mailbox: Any, account: Account) -> str:
    response = await client.post("/auth/forgot-password", json={"email": account.email})
    assert response.status_code == 202
    [message] = await mailbox.wait_for(account.email)
    return reset_token(message)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


async def test_link_moves_the_token_out_of_the_url(
    client: Any, mailbox: Any, user: Account
) -> None:
    token = await mail_token(client, mailbox, user)
    response = await client.get(f"/reset-password?token={token}")
    assert response.status_code == 303
    assert response.headers["location"] == "/reset-password"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "Path=/reset-password" in cookie
    assert "samesite=lax" in cookie.lower()
    for name, value in {
        "cache-control": "no-store",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
    }.items():
        assert response.headers[name] == value


async def test_form_page_headers_and_strict_csp(client: Any, mailbox: Any, user: Account) -> None:
    token = await mail_token(client, mailbox, user)
    await client.get(f"/reset-password?token={token}")
    page = await client.get("/reset-password")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script" not in page.text
    assert "style=" not in page.text
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "At least 8 characters" in page.text
    assert token not in page.text


async def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    client: Any, app: Any, mailbox: Any, user: Account
) -> None:
    token = await mail_token(client, mailbox, user)
    await client.get(f"/reset-password?token={token}")
    await client.get("/reset-password")
    for csrf in ("", "forged"):
        response = await client.post(
            "/reset-password",
            data={
                "csrf": csrf,
                "action": "reset",
                "password": "new password 1",
                "password_confirm": "new password 1",
            },
        )
        assert response.status_code == 403
    # Nothing changed: the old password still works, the token is still usable.
    login = await client.post("/auth/login", json={"email": user.email, "password": user.password})
    assert login.status_code == 200


async def test_reset_through_the_form_then_the_link_is_spent(
    client: Any, mailbox: Any, user: Account
) -> None:
    token = await mail_token(client, mailbox, user)
    await client.get(f"/reset-password?token={token}")
    form = await client.get("/reset-password")
    mismatch = await client.post(
        "/reset-password",
        data={
            "csrf": csrf_of(form.text),
            "action": "reset",
            "password": "new password 1",
            "password_confirm": "other 12345",
        },
    )
    assert mismatch.status_code == 422
    assert "The two passwords are not the same." in mismatch.text
    done = await client.post(
        "/reset-password",
        data={
            "csrf": csrf_of(mismatch.text),
            "action": "reset",
            "password": "new password 1",
            "password_confirm": "new password 1",
        },
    )
    assert done.status_code == 200
    assert "Every other session was signed out." in done.text
    assert (
        await client.post("/auth/login", json={"email": user.email, "password": "new password 1"})
    ).status_code == 200
    assert (
        await client.post("/auth/login", json={"email": user.email, "password": user.password})
    ).status_code == 401
    again = await client.get(f"/reset-password?token={token}", follow_redirects=True)
    assert "This link has expired" in again.text


async def test_expired_link_offers_a_new_mail(client: Any, mailbox: Any, user: Account) -> None:
    page = await client.get("/reset-password?token=not-a-real-token", follow_redirects=True)
    assert "This link has expired" in page.text
    sent = await client.post(
        "/reset-password",
        data={"csrf": csrf_of(page.text), "action": "resend", "email": user.email},
    )
    assert sent.status_code == 200
    assert "a new link is on its way" in sent.text
    await mailbox.wait_for(user.email)


async def test_page_language_from_token_owner_else_accept_language(
    client: Any, mailbox: Any, register: Any
) -> None:
    russian = await register(locale="ru")
    token = await mail_token(client, mailbox, russian)
    await client.get(f"/reset-password?token={token}")
    page = await client.get("/reset-password", headers={"accept-language": "en-US"})
    assert "Новый пароль" in page.text
    client.cookies.clear()
    unknown = await client.get(
        "/reset-password", headers={"accept-language": "ru-RU,ru;q=0.9,en;q=0.8"}
    )
    assert "Ссылка устарела" in unknown.text
    assert unknown.headers["content-language"] == "ru"
    for header, words in (
        ("de-CH, en;q=0.5", "Dieser Link ist abgelaufen"),
        ("uk", "Посилання застаріло"),
        ("pt", "Este link expirou"),
        ("es-MX, es;q=0.9", "Este enlace ha caducado"),
        ("fr-FR", "Ce lien a expiré"),
        ("ja", "This link has expired"),
    ):
        page = await client.get("/reset-password", headers={"accept-language": header})
        assert words in page.text, header


async def test_app_link_files_404_until_configured(client: Any) -> None:
    assert (await client.get("/.well-known/apple-app-site-association")).status_code == 404
    assert (await client.get("/.well-known/assetlinks.json")).status_code == 404
    settings = get_settings().model_copy(
        update={
            "ios_app_ids": "ABCDE12345.com.goaltrack.app",
            "android_package_name": "com.goaltrack.app",
            "android_cert_sha256": "AA:BB:CC",
        }
    )
    configured = create_app(settings)
    async with configured.router.lifespan_context(configured):
        transport = httpx.ASGITransport(app=configured)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            apple = await http.get("/.well-known/apple-app-site-association")
            android = await http.get("/.well-known/assetlinks.json")
    assert apple.status_code == 200
    assert apple.headers["content-type"] == "application/json"
    details = apple.json()["applinks"]["details"][0]
    assert details["appIDs"] == ["ABCDE12345.com.goaltrack.app"]
    assert details["components"] == [{"/": "/reset-password*"}]
    assert android.headers["content-type"] == "application/json"
    target = android.json()[0]["target"]
    assert target == {
        "namespace": "android_app",
        "package_name": "com.goaltrack.app",
        "sha256_cert_fingerprints": ["AA:BB:CC"],
    }


def test_access_log_records_lose_the_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/reset-password?token=s3cr3t-token&x=1", "1.1", 303),
        None,
    )
    RedactTokens().filter(record)
    assert "s3cr3t-token" not in record.getMessage()
    assert "token=[redacted]&x=1" in record.getMessage()


# --- a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_server() -> Iterator[str]:
    """The app on a real port (its own instance, same database and worker), for the browser."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    with httpx.Client() as http:
        for _ in range(200):
            try:
                if http.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver_path = installed("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for binary in ("chromium", "chromium-browser"):
        if path := shutil.which(binary):
            options.binary_location = path
            break
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=480,860"):
        options.add_argument(argument)
    # The page must work without JavaScript.
    options.add_experimental_option(
        "prefs", {"profile.managed_default_content_settings.javascript": 2}
    )
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shoot(browser: Any, tmp_path: Path, name: str) -> None:
    """Every page state is photographed; UPDATE_SCREENSHOTS=1 refreshes docs/screenshots."""
    target = SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(target / f"{name}.png"))


@pytest.mark.parametrize(
    ("locale", "weak_error", "done_text", "expired_text"),
    [
        (
            "en",
            "at least 8 characters",
            "Every other session was signed out.",
            "This link has expired",
        ),
        ("ru", "не короче 8 символов", "Все остальные сеансы завершены.", "Ссылка устарела"),
        (
            "de",
            "mindestens 8 Zeichen",
            "Alle anderen Sitzungen wurden abgemeldet.",
            "Dieser Link ist abgelaufen",
        ),
        ("uk", "щонайменше 8 символів", "Усі інші сеанси завершено.", "Посилання застаріло"),
    ],
)
async def test_reset_in_a_real_browser(
    client: Any,
    mailbox: Any,
    register: Any,
    browser: Any,
    live_server: str,
    tmp_path: Path,
    locale: str,
    weak_error: str,
    done_text: str,
    expired_text: str,
) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    account = await register(locale=locale)
    token = await mail_token(client, mailbox, account)
    link = f"{live_server}/reset-password?token={token}"  # the mail's link, on this server

    def visit(url: str) -> None:
        browser.delete_all_cookies()
        browser.get(url)

    def fill(password: str, confirm: str, then: str) -> None:
        """Submit the form and wait for the next page (element `then`)."""
        # Every rendered page carries a fresh CSRF value: the next page is there when the old
        # value is gone and `then` is present (robust to the navigation racing the checks).
        old_csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        browser.find_element(By.ID, "password").send_keys(password)
        browser.find_element(By.ID, "password_confirm").send_keys(confirm)
        browser.find_element(By.ID, "submit").click()

        def arrived(driver: Any) -> bool:
            csrf = [field.get_attribute("value") for field in driver.find_elements(By.NAME, "csrf")]
            return old_csrf not in csrf and bool(driver.find_elements(By.ID, then))

        WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(arrived)

    await asyncio.to_thread(visit, link)
    assert browser.current_url == f"{live_server}/reset-password"  # the token left the address bar
    assert browser.find_element(By.ID, "password")
    shoot(browser, tmp_path, f"reset-{locale}-1-form")

    await asyncio.to_thread(fill, "short", "short", "error")
    assert weak_error in browser.find_element(By.ID, "error").text
    shoot(browser, tmp_path, f"reset-{locale}-2-weak")

    await asyncio.to_thread(fill, "a much better password", "a much better password", "message")
    assert done_text in browser.find_element(By.ID, "message").text
    assert browser.find_element(By.ID, "open-app").get_attribute("href") == "goaltrack://"
    shoot(browser, tmp_path, f"reset-{locale}-3-done")

    new = await client.post(
        "/auth/login", json={"email": account.email, "password": "a much better password"}
    )
    old = await client.post(
        "/auth/login", json={"email": account.email, "password": account.password}
    )
    assert (new.status_code, old.status_code) == (200, 401)

    await asyncio.to_thread(visit, link)
    assert expired_text in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_element(By.ID, "resend")
    shoot(browser, tmp_path, f"reset-{locale}-4-expired")
