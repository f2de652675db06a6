"""Languages: one gettext catalogue per locale for every text the server writes.

The catalogues themselves (no services): each has exactly the English catalogue's messages, the
same placeholders, every plural form its Plural-Forms rule asks for (three in Russian and
Ukrainian), and every message id the code uses exists (error details, `t()` keys, templates).
Then through the API: problem bodies in the caller's settings.locale, else Accept-Language;
push, mail, the digest, achievements in a non-English locale, plural forms 1/2/5.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import string
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from sqlalchemy import select

import goaltrack
from goaltrack import i18n
from goaltrack.achievements.models import Achievement
from goaltrack.clock import get_now
from goaltrack.errors import AppError
from goaltrack.notifications.models import Notification
from goaltrack.scheduling import dispatcher as scheduler
from goaltrack.schemas import Locale
from helpers import Account, assert_problem, create_goal, make_image

SOURCE = Path(goaltrack.__file__).parent
LOCALES = ("en", "de", "es", "fr", "pt-BR", "ru", "uk")
PLURAL_SAMPLES = (0, 1, 2, 3, 5, 11, 12, 21, 22, 25, 111, 1000000)


def read(tag: str) -> Catalog:
    with i18n.catalogue_path(tag).open("rb") as po:
        return read_po(po, abort_invalid=True)


CATALOGUES = {tag: read(tag) for tag in LOCALES}
ENGLISH = CATALOGUES["en"]


def message_id(message: Any) -> str:
    return str(message.id[0] if message.pluralizable else message.id)


def forms(message: Any) -> list[str]:
    return list(message.string) if message.pluralizable else [message.string]


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def symbolic(key: str) -> bool:
    """The server's own texts have symbolic ids (`reminder.title`); a problem detail's id is its
    English text."""
    return " " not in key


def messages(catalog: Catalog) -> dict[str, Any]:
    return {message_id(message): message for message in catalog if message.id}


# -- the catalogues -----------------------------------------------------------------------------


def test_the_seven_locales_are_the_catalogues_and_the_api_type() -> None:
    assert set(i18n.LOCALES) == set(LOCALES)
    assert i18n.LOCALES[0] == "en"
    assert set(get_args(Locale)) == set(LOCALES)
    on_disk = {
        i18n.locale_tag(path.parent.parent.name)
        for path in i18n.LOCALE_DIR.glob("*/LC_MESSAGES/goaltrack.po")
    }
    assert on_disk == set(LOCALES)


@pytest.mark.parametrize("tag", [tag for tag in LOCALES if tag != "en"])
def test_every_catalogue_has_exactly_the_english_messages(tag: str) -> None:
    english, translated = messages(ENGLISH), messages(CATALOGUES[tag])
    assert sorted(english.keys() - translated.keys()) == [], f"{tag} lacks these"
    assert sorted(translated.keys() - english.keys()) == [], f"{tag} has these, English not"
    for key, message in translated.items():
        assert message.pluralizable == english[key].pluralizable, (tag, key)
        assert not message.fuzzy, (tag, key)


@pytest.mark.parametrize("tag", LOCALES)
def test_every_message_is_translated_with_the_same_placeholders(tag: str) -> None:
    catalog = CATALOGUES[tag]
    english = messages(ENGLISH)
    assert catalog.locale is not None
    assert i18n.locale_tag(str(catalog.locale)) == tag  # the header's Language
    for key, message in messages(catalog).items():
        reference = english[key]
        expected = fields(forms(reference)[-1])  # English's "other" form
        if not symbolic(key):
            assert fields(key) == expected, key
        assert len(forms(message)) == (catalog.num_plurals if message.pluralizable else 1), key
        for text in forms(message):
            assert text.strip(), (tag, key, "empty")
            assert fields(text) == expected, (tag, key, text)
        if message.pluralizable:
            assert "count" in expected, (key, "a plural message is chosen by {count}")


@pytest.mark.parametrize("tag", LOCALES)
def test_every_message_formats_for_any_number(tag: str) -> None:
    for key, message in messages(ENGLISH).items():
        values = dict.fromkeys(fields(forms(message)[-1]), "x")
        counts = PLURAL_SAMPLES if message.pluralizable else (None,)
        for count in counts:
            if count is not None:
                values["count"] = count
            text = i18n.t(tag, key, **values)
            assert "{" not in text, (tag, key, text)
            assert not symbolic(key) or text != key, (tag, key)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (
            "uk",
            {
                1: "1 ціль у роботі.",
                2: "2 цілі в роботі.",
                5: "5 цілей у роботі.",
                11: "11 цілей у роботі.",
                21: "21 ціль у роботі.",
                22: "22 цілі в роботі.",
                111: "111 цілей у роботі.",
            },
        ),
        (
            "ru",
            {
                1: "1 цель в работе.",
                2: "2 цели в работе.",
                5: "5 целей в работе.",
                12: "12 целей в работе.",
                21: "21 цель в работе.",
                24: "24 цели в работе.",
            },
        ),
        ("de", {1: "1 Ziel in Arbeit.", 2: "2 Ziele in Arbeit.", 0: "0 Ziele in Arbeit."}),
        (
            "fr",
            {
                0: "0\xa0objectif en cours.",
                1: "1\xa0objectif en cours.",
                2: "2\xa0objectifs en cours.",
            },
        ),
        ("pt-BR", {1: "1 meta em andamento.", 2: "2 metas em andamento."}),
        ("es", {1: "1 objetivo en curso.", 5: "5 objetivos en curso."}),
        ("en", {1: "1 goal in progress.", 2: "2 goals in progress."}),
    ],
)
def test_plural_forms_follow_each_languages_rule(tag: str, expected: dict[int, str]) -> None:
    assert {n: i18n.t(tag, "digest.body", count=n) for n in expected} == expected


def test_an_unknown_locale_or_message_reads_as_english() -> None:
    assert i18n.t("xx", "reminder.title", goal="Run") == "Time for: Run"
    # A problem detail no catalogue has yet (an error class added since): its English text.
    assert i18n.t("de", "A detail nobody translated yet.") == "A detail nobody translated yet."


# -- every message the code uses is in the catalogues --------------------------------------------


def _import_everything() -> None:
    for module in pkgutil.walk_packages(goaltrack.__path__, "goaltrack."):
        if not any(part in module.name for part in (".migrations", ".dev", "__main__")):
            importlib.import_module(module.name)


def _subclasses(cls: type[AppError]) -> list[type[AppError]]:
    found: list[type[AppError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_every_error_detail_is_a_message() -> None:
    _import_everything()
    errors = [AppError, *_subclasses(AppError)]
    missing = {
        f"{error.__module__}.{error.__name__}": error.detail
        for error in errors
        if error.detail not in i18n.MESSAGE_IDS
    }
    assert missing == {}
    statuses = {error.status_code for error in errors} | {405, 413, 422, 500, 503}
    assert {status for status in statuses if f"status.{status}" not in i18n.MESSAGE_IDS} == set()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else None


def test_every_message_id_in_the_code_is_in_the_catalogues() -> None:
    """Literal details passed to an error (`NotSnoozable("...")`, `detail=`), `problem()`'s and
    `t()`'s literal ids, and the templates' `t("...")`."""
    _import_everything()
    errors = {cls.__name__ for cls in _subclasses(AppError)} | {"AppError"}
    used: dict[str, str] = {}
    for path in SOURCE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        for call in _calls(ast.parse(path.read_text())):
            name = _name(call)
            arguments: list[ast.expr] = []
            if name in errors:
                arguments = [*call.args[:1], *(k.value for k in call.keywords if k.arg == "detail")]
            elif name == "problem":
                arguments = call.args[2:3]
            elif name == "t":
                arguments = call.args[1:2]
            for argument in arguments:
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    used[argument.value] = f"{path.relative_to(SOURCE)}:{call.lineno}"
                elif isinstance(argument, ast.JoinedStr) and name != "t":
                    # A detail made with an f-string has no id: pass `values=` instead.
                    # (`t(locale, f"achievement.{code}.title")`: test_achievements_in_ukrainian.)
                    used["<f-string>"] = f"{path.relative_to(SOURCE)}:{call.lineno}"
    for template in (SOURCE / "web" / "templates").glob("*.html"):
        for key in re.findall(r"""\bt\(["']([^"']+)["']""", template.read_text()):
            used[key] = template.name
    assert len(used) > 40
    assert {key: where for key, where in used.items() if key not in i18n.MESSAGE_IDS} == {}


# -- Accept-Language ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "en"),
        ("", "en"),
        ("de", "de"),
        ("de-AT", "de"),
        ("DE-de", "de"),
        ("pt", "pt-BR"),
        ("pt-PT", "pt-BR"),
        ("pt-br", "pt-BR"),
        ("uk-UA,uk;q=0.9,en-US;q=0.8", "uk"),
        ("en-GB;q=0.5, fr;q=0.8", "fr"),  # by q-value, not by order
        ("ru;q=0.7, es;q=0.7", "ru"),  # a tie: the order sent
        ("xx, zz-YY", "en"),  # nothing we have
        ("ja, de;q=0.1", "de"),
        ("de;q=0, es", "es"),  # q=0: not this one
        ("de;q=0", "en"),
        ("*", "en"),
        ("es;q=abc, fr", "fr"),  # a malformed weight counts as not wanted
        ("fr;q=1.5", "fr"),
        (" , ;q=1, es-419", "es"),
    ],
)
def test_accept_language_negotiation(header: str | None, locale: str) -> None:
    assert i18n.negotiate(header) == locale


# -- settings -------------------------------------------------------------------------------------


async def test_settings_take_every_locale_and_nothing_else(client: Any, user: Account) -> None:
    for locale in LOCALES:  # the database's CHECK takes each (a new catalogue needs a migration)
        response = await client.put("/settings", json={"locale": locale}, headers=user.headers)
        assert response.status_code == 200, response.text
        assert (await client.get("/settings", headers=user.headers)).json()["locale"] == locale
    for wrong in ("pt", "pt_BR", "de-DE", "EN", "it"):
        response = await client.put("/settings", json={"locale": wrong}, headers=user.headers)
        assert_problem(response, 422, "validation_error")


# -- problem bodies -------------------------------------------------------------------------------


async def test_a_callers_problems_are_in_their_settings_locale(client: Any, register: Any) -> None:
    german = await register(locale="de")
    missing = await client.get(
        f"/goals/{uuid.uuid4()}", headers={**german.headers, "Accept-Language": "fr"}
    )
    body = assert_problem(missing, 404, "not_found")  # the code never changes
    assert (body["title"], body["detail"]) == ("Nicht gefunden", "Die Ressource existiert nicht.")
    assert missing.headers["content-language"] == "de"

    # A 422 of our own: its `errors` say it in the same words.
    cursor = await client.get("/notifications?cursor=nonsense", headers=german.headers)
    body = assert_problem(cursor, 422, "invalid_cursor")
    assert body["title"] == "Ungültige Daten"
    assert body["detail"] == body["errors"][0]["msg"] == "Der Cursor passt nicht zu dieser Liste."

    # The language follows the setting at once.
    changed = await client.put("/settings", json={"locale": "uk"}, headers=german.headers)
    assert changed.status_code == 200
    body = assert_problem(
        await client.get(f"/goals/{uuid.uuid4()}", headers=german.headers), 404, "not_found"
    )
    assert (body["title"], body["detail"]) == ("Не знайдено", "Такого ресурсу немає.")


async def test_without_a_caller_problems_follow_accept_language(client: Any, user: Account) -> None:
    wrong = {"email": user.email, "password": "not the password"}
    login = await client.post("/auth/login", json=wrong, headers={"Accept-Language": "uk"})
    body = assert_problem(login, 401, "invalid_credentials")
    assert (body["title"], body["detail"]) == ("Потрібен вхід", "Неправильний e-mail або пароль.")
    assert login.headers["content-language"] == "uk"
    assert "accept-language" in login.headers["vary"].lower()

    portuguese = await client.post(
        "/auth/login", json=wrong, headers={"Accept-Language": "pt-PT,pt;q=0.9,en;q=0.5"}
    )
    assert assert_problem(portuguese, 401, "invalid_credentials")["detail"] == (
        "E-mail ou senha incorretos."
    )
    unknown = await client.post("/auth/login", json=wrong, headers={"Accept-Language": "ja"})
    body = assert_problem(unknown, 401, "invalid_credentials")
    assert (body["title"], body["detail"]) == ("Unauthorized", "Wrong e-mail or password.")

    # An access token that does not verify is no caller.
    stale = await client.get(
        "/goals", headers={"Authorization": "Bearer nonsense", "Accept-Language": "fr"}
    )
    body = assert_problem(stale, 401, "not_authenticated")
    assert body["detail"] == "Jeton d’accès manquant, non valide ou expiré."

    invalid = await client.post("/auth/login", json={}, headers={"Accept-Language": "es"})
    body = assert_problem(invalid, 422, "validation_error")
    assert (body["title"], body["detail"]) == ("Datos no válidos", "La solicitud no es válida.")

    not_allowed = await client.delete("/health", headers={"Accept-Language": "fr-CA"})
    body = assert_problem(not_allowed, 405, "method_not_allowed")
    assert (body["title"], body["detail"]) == ("Méthode non autorisée", "Méthode non autorisée")
    nowhere = await client.get("/nope", headers={"Accept-Language": "ru"})
    assert assert_problem(nowhere, 404, "not_found")["title"] == "Не найдено"


async def test_a_detail_with_values_is_translated_then_filled_in(
    client: Any, app: Any, user: Account
) -> None:
    limit = app.state.settings.max_json_body_bytes
    response = await client.post(
        "/auth/login",
        content=b"x" * (limit + 1),
        headers={"Content-Type": "application/json", "Accept-Language": "de"},
    )
    body = assert_problem(response, 413, "payload_too_large")
    assert body["title"] == "Anfrage zu groß"
    assert body["detail"] == f"Der Inhalt der Anfrage ist größer als {limit} Bytes."
    goal = await create_goal(client, user)
    await client.put("/settings", json={"locale": "es"}, headers=user.headers)
    truncated = make_image("PNG")[:-20]
    upload = await client.post(
        f"/goals/{goal['id']}/attachments",
        files={"file": ("a.png", truncated, "image/png")},
        headers=user.headers,
    )
    body = assert_problem(upload, 422, "validation_error")
    assert body["detail"] == "El archivo no es un archivo PNG válido: está truncado o dañado."


# -- push, mail, digest, achievements ------------------------------------------------------------


async def feed_of(client: Any, account: Account) -> list[dict[str, Any]]:
    response = await client.get("/notifications", headers=account.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_push_texts_in_german(client: Any, register: Any) -> None:
    german = await register(locale="de")
    goal = await create_goal(client, german, title="Marathon laufen")
    stage = await client.post(
        f"/goals/{goal['id']}/stages", json={"title": "Einzige Etappe"}, headers=german.headers
    )
    assert stage.status_code == 201, stage.text
    done = await client.put(
        f"/goals/{goal['id']}/stages/{stage.json()['id']}/complete", headers=german.headers
    )
    assert done.status_code == 200, done.text
    feed = await feed_of(client, german)
    [completed] = [item for item in feed if item["type"] == "goal_completed"]
    assert (completed["title"], completed["body"]) == (
        "Ziel erreicht!",
        "Du hast alle Etappen von „Marathon laufen“ abgeschlossen. Gut gemacht!",
    )
    earned = {
        item["data"]["achievement_code"]: (item["title"], item["body"])
        for item in feed
        if item["type"] == "achievement"
    }
    assert earned["first_goal"] == ("Erstes Ziel", "Du hast dir dein erstes Ziel gesetzt.")
    assert earned["first_goal_completed"] == ("Ziel erreicht", "Du hast dein erstes Ziel erreicht.")


async def test_achievements_in_ukrainian(client: Any, app: Any, register: Any) -> None:
    ukrainian = await register(locale="uk")
    await create_goal(client, ukrainian)
    listing = await client.get("/achievements", headers=ukrainian.headers)
    assert listing.status_code == 200, listing.text
    items = {item["code"]: item for item in listing.json()["items"]}
    assert (items["first_goal"]["title"], items["first_goal"]["description"]) == (
        "Перша ціль",
        "Ви поставили свою першу ціль.",
    )
    assert items["streak_7"]["title"] == "Тиждень поспіль"
    [note] = [item for item in await feed_of(client, ukrainian) if item["type"] == "achievement"]
    assert (note["title"], note["body"]) == ("Перша ціль", "Ви поставили свою першу ціль.")
    # Every achievement the migrations seeded has its words in the catalogues.
    async with app.state.sessionmaker() as session:
        codes = list(await session.scalars(select(Achievement.code)))
    assert len(codes) >= 14
    for code in codes:
        assert {f"achievement.{code}.title", f"achievement.{code}.description"} <= i18n.MESSAGE_IDS


def test_digest_sentences_take_their_plural_forms() -> None:
    today = date(2026, 6, 1)

    def digest(count: int, days: int | None, habits: int = 0) -> str:
        deadline = None if days is None else date.fromordinal(today.toordinal() + days)
        summary = scheduler._Summary(
            count=count,
            nearest_title="Біг",
            nearest_deadline=deadline,
            today=today,
            habits_to_do=habits,
        )
        return summary.text("uk")

    assert digest(1, 1) == "1 ціль у роботі. Термін цілі «Біг» — через 1 день."
    assert digest(2, 2, 1) == (
        "2 цілі в роботі. Термін цілі «Біг» — через 2 дні. На сьогодні 1 звичка."
    )
    assert digest(5, -5, 2) == (
        "5 цілей у роботі. Термін цілі «Біг» минув 5 днів тому. На сьогодні 2 звички."
    )
    assert (
        digest(21, 0, 5) == "21 ціль у роботі. Термін цілі «Біг» — сьогодні. На сьогодні 5 звичок."
    )
    assert digest(1, None) == "1 ціль у роботі."


async def test_digest_push_in_ukrainian(client: Any, app: Any, register: Any) -> None:
    account = await register(timezone="Europe/Kyiv", locale="uk")
    app.dependency_overrides[get_now] = lambda: datetime(2026, 6, 1, 5, 0, tzinfo=UTC)
    await create_goal(client, account, title="Вивчити іспанську", deadline="2026-06-02")
    await create_goal(client, account, title="Пробігти марафон")
    response = await client.put(
        "/settings/notifications/frequency",
        json={"frequency": "daily", "times": ["09:00"]},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    async with app.state.sessionmaker() as session, session.begin():
        served = await scheduler.dispatch_digests(
            session,
            now=datetime(2026, 6, 1, 6, 0, 5, tzinfo=UTC),
            max_lateness=timedelta(minutes=60),
        )
    assert served.sent == 1
    async with app.state.sessionmaker() as session:
        [digest] = await session.scalars(select(Notification).where(Notification.type == "digest"))
    assert digest.title == "Ваші цілі"
    assert digest.body == "2 цілі в роботі. Термін цілі «Вивчити іспанську» — через 1 день."


async def test_mails_in_german_and_ukrainian(client: Any, mailbox: Any, register: Any) -> None:
    german = await register(locale="de")
    response = await client.post("/auth/forgot-password", json={"email": german.email})
    assert response.status_code == 202
    [reset] = await mailbox.wait_for(german.email)
    assert reset["Subject"] == "Dein Goaltrack-Passwort zurücksetzen"
    text = reset.get_body(preferencelist=("plain",)).get_content()
    assert "innerhalb von 30 Minuten" in text

    ukrainian = await register(locale="uk")
    [verify] = await mailbox.wait_for(ukrainian.email, verification=True)
    assert verify["Subject"] == "Підтвердьте e-mail для Goaltrack"
    text = verify.get_body(preferencelist=("plain",)).get_content()
    assert text.startswith("Вітаємо!\n\nБудь ласка, підтвердьте, що це ваша адреса")
    assert "Посилання й код дійсні 24 години." in text  # 24: the "few" form
