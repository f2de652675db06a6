"""An achievement's words, from the message catalogue by its code (`achievement.<code>.title`):
the catalogue table holds what an achievement is (condition, threshold, icon, order), the
catalogues what it is called in each language."""

from __future__ import annotations

from goaltrack.i18n import t


def title(code: str, locale: str) -> str:
    return t(locale, f"achievement.{code}.title")


def description(code: str, locale: str) -> str:
    return t(locale, f"achievement.{code}.description")
