"""The reset page's words, per locale (the page picks the token owner's locale, else the
browser's Accept-Language)."""

from __future__ import annotations

from goaltrack.auth.schemas import PASSWORD_MIN_CHARS
from goaltrack.auth.security import BCRYPT_MAX_BYTES

PAGE_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "title": "Choose a new password",
        "intro": "Choose a new password for your Goaltrack account.",
        "rules": (
            f"At least {PASSWORD_MIN_CHARS} characters, not only spaces, and at most "
            f"{BCRYPT_MAX_BYTES} bytes (about {BCRYPT_MAX_BYTES} Latin letters or "
            f"{BCRYPT_MAX_BYTES // 2} Cyrillic ones)."
        ),
        "password": "New password",
        "confirm": "Repeat the new password",
        "submit": "Set the password",
        "error.too_short": f"The password must have at least {PASSWORD_MIN_CHARS} characters.",
        "error.blank": "The password must not be only spaces.",
        "error.too_long": f"The password must be at most {BCRYPT_MAX_BYTES} bytes long.",
        "error.mismatch": "The two passwords are not the same.",
        "error.form": "The form expired. Please try again.",
        "invalid.title": "This link has expired",
        "invalid.text": "The link is used, expired or not valid. Ask for a new one:",
        "email": "Your e-mail",
        "resend": "Send me a new link",
        "sent.title": "Check your mail",
        "sent.text": "If an account exists for this e-mail, a new link is on its way.",
        "limited.text": "Too many requests. Please wait a little and try again.",
        "done.title": "Your password is changed",
        "done.text": "You can now sign in with it. Every other session was signed out.",
        "open_app": "Open Goaltrack",
    },
    "ru": {
        "title": "Новый пароль",
        "intro": "Задайте новый пароль для учётной записи Goaltrack.",
        "rules": (
            f"Не короче {PASSWORD_MIN_CHARS} символов, не только пробелы и не длиннее "
            f"{BCRYPT_MAX_BYTES} байт (около {BCRYPT_MAX_BYTES} латинских или "
            f"{BCRYPT_MAX_BYTES // 2} русских букв)."
        ),
        "password": "Новый пароль",
        "confirm": "Повторите новый пароль",
        "submit": "Сохранить пароль",
        "error.too_short": f"Пароль должен быть не короче {PASSWORD_MIN_CHARS} символов.",
        "error.blank": "Пароль не может состоять только из пробелов.",
        "error.too_long": f"Пароль должен быть не длиннее {BCRYPT_MAX_BYTES} байт.",
        "error.mismatch": "Пароли не совпадают.",
        "error.form": "Форма устарела. Попробуйте ещё раз.",
        "invalid.title": "Ссылка устарела",
        "invalid.text": "Ссылка уже использована, истекла или неверна. Запросите новую:",
        "email": "Ваш e-mail",
        "resend": "Прислать новую ссылку",
        "sent.title": "Проверьте почту",
        "sent.text": "Если учётная запись с этим адресом существует, новая ссылка уже в пути.",
        "limited.text": "Слишком много запросов. Подождите немного и попробуйте снова.",
        "done.title": "Пароль изменён",
        "done.text": "Теперь можно войти с новым паролем. Все остальные сеансы завершены.",
        "open_app": "Открыть Goaltrack",
    },
}


def page_locale(accept_language: str | None) -> str:
    """The first of the browser's languages we have (q-values in order of appearance)."""
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        language = tag.split("-")[0]
        if language in PAGE_TEXTS:
            return language
    return "en"
