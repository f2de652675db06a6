"""Texts the server writes, per `settings.locale`."""

from __future__ import annotations

from typing import Any

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "reset.subject": "Reset your Goaltrack password",
        "reset.text": (
            "Someone asked to reset the password of your Goaltrack account.\n\n"
            "Open the link below within {minutes} minutes to choose a new password. "
            "If it was not you, ignore this e-mail."
        ),
        "goal_completed.title": "Goal completed!",
        "goal_completed.body": "You completed every stage of '{goal}'. Well done!",
        "reminder.title": "Time for: {goal}",
        "reminder.body": "Next: {stage}",
        "reminder.body_no_stage": "Keep going: add the next stage of this goal.",
        "digest.title": "Your goals",
        "digest.body": "{count} goals in progress.",
        "digest.body_one": "1 goal in progress.",
        "digest.due": " '{goal}' is due in {days} days.",
        "digest.due_today": " '{goal}' is due today.",
        "digest.overdue": " '{goal}' was due {days} days ago.",
        "digest.habits": " {count} habits to do today.",
        "digest.habits_one": " 1 habit to do today.",
        "ai_ready.title": "Your plan is ready",
        "ai_ready.body": "'{goal}' has {count} new stages.",
        "ai_failed.title": "Could not make a plan",
        "ai_failed.body": "The AI could not split '{goal}' into stages. Try again later.",
        "export.title": "Your data export is ready",
        "export.body": "Download your Goaltrack data within {days} days.",
        "export.mail": (
            "The export of your Goaltrack data is ready: a ZIP with everything you stored.\n\n"
            "Download it from the link below within {days} days. If you did not ask for it, "
            "change your password."
        ),
        "verify.subject": "Confirm your e-mail for Goaltrack",
        "verify.text": (
            "{greeting}confirm that this address is yours: open the link below, or enter the code "
            "{code} in the app. Both work for {hours} hours.\n\n"
            "If you did not sign up for Goaltrack or change your address, ignore this e-mail."
        ),
        "verify.greeting": "Hello {name}, ",
        "verify.greeting_anonymous": "Hello, ",
        "email_change.subject": "Your Goaltrack e-mail is being changed",
        "email_change.text": (
            "Someone asked to move your Goaltrack account to {new_email}. It moves once that "
            "address is confirmed; until then this one keeps working.\n\n"
            "If it was not you, change your password at once."
        ),
        "changed.subject": "Your Goaltrack password was changed",
        "changed.text": (
            "The password of your Goaltrack account was just changed and every session was signed out.\n\n"
            "If it was not you, reset your password at once."
        ),
    },
    "ru": {
        "reset.subject": "Сброс пароля Goaltrack",
        "reset.text": (
            "Кто-то запросил сброс пароля вашей учётной записи Goaltrack.\n\n"
            "Откройте ссылку ниже в течение {minutes} минут, чтобы задать новый пароль. "
            "Если это были не вы, просто проигнорируйте письмо."
        ),
        "goal_completed.title": "Цель достигнута!",
        "goal_completed.body": "Все этапы цели «{goal}» выполнены. Отличная работа!",
        "reminder.title": "Пора заняться: {goal}",
        "reminder.body": "Следующий этап: {stage}",
        "reminder.body_no_stage": "Продолжайте: добавьте следующий этап этой цели.",
        "digest.title": "Ваши цели",
        "digest.body": "Целей в работе: {count}.",
        "digest.body_one": "Целей в работе: 1.",
        "digest.due": " Срок цели «{goal}» — через {days} дн.",
        "digest.due_today": " Срок цели «{goal}» — сегодня.",
        "digest.overdue": " Срок цели «{goal}» прошёл {days} дн. назад.",
        "digest.habits": " Привычек на сегодня: {count}.",
        "digest.habits_one": " Привычек на сегодня: 1.",
        "ai_ready.title": "План готов",
        "ai_ready.body": "У цели «{goal}» новых этапов: {count}.",
        "ai_failed.title": "Не удалось составить план",
        "ai_failed.body": "ИИ не смог разбить цель «{goal}» на этапы. Попробуйте позже.",
        "export.title": "Экспорт данных готов",
        "export.body": "Скачайте свои данные Goaltrack в течение {days} дней.",
        "export.mail": (
            "Экспорт ваших данных Goaltrack готов: ZIP-архив со всем, что вы сохранили.\n\n"
            "Скачайте его по ссылке ниже в течение {days} дн. Если вы его не запрашивали, "
            "смените пароль."
        ),
        "verify.subject": "Подтвердите e-mail для Goaltrack",
        "verify.text": (
            "{greeting}подтвердите, что это ваш адрес: откройте ссылку ниже или введите в "
            "приложении код {code}. Оба действуют {hours} ч.\n\n"
            "Если вы не регистрировались в Goaltrack и не меняли адрес, проигнорируйте письмо."
        ),
        "verify.greeting": "Здравствуйте, {name}! Пожалуйста, ",
        "verify.greeting_anonymous": "Здравствуйте! Пожалуйста, ",
        "email_change.subject": "Адрес e-mail в Goaltrack меняется",
        "email_change.text": (
            "Кто-то попросил перенести вашу учётную запись Goaltrack на адрес {new_email}. Адрес "
            "сменится, когда новый будет подтверждён; до тех пор этот продолжает работать.\n\n"
            "Если это были не вы, немедленно смените пароль."
        ),
        "changed.subject": "Пароль Goaltrack изменён",
        "changed.text": (
            "Пароль вашей учётной записи Goaltrack только что изменён, все сеансы завершены.\n\n"
            "Если это были не вы, немедленно сбросьте пароль."
        ),
    },
}


def t(locale: str, key: str, **values: Any) -> str:
    catalogue = MESSAGES.get(locale, MESSAGES["en"])
    return catalogue.get(key, MESSAGES["en"][key]).format(**values)
