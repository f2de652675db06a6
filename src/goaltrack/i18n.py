"""Every text the server writes, from one gettext catalogue per locale.

The catalogues are `locales/<ll[_CC]>/LC_MESSAGES/goaltrack.po` (gettext's directory names:
`pt_BR` is the API's `pt-BR`); adding a language is adding a file (and letting the settings'
CHECK constraint accept it: a migration). They are compiled in memory when this module is
imported (Babel reads the .po, writes the .mo into a buffer, the standard library's gettext reads
it), so a fresh clone needs no build step and a catalogue that does not parse stops the start.

Two kinds of message ids live in them:
- the server's own texts (push, mail, the web page, achievements, problem titles) have short
  symbolic ids, `reminder.title`, whose English is in the `en` catalogue;
- a problem's `detail` has its English text as its id (errors.py translates it when the problem
  is rendered), so an error class added without translations still answers, in English.

Placeholders are `str.format` fields (`{goal}`). A message with plural forms is chosen by the
value named `count` (ngettext, with each catalogue's Plural-Forms rule: three forms in Russian
and Ukrainian). Sentences are never assembled from translated fragments: a text that varies is
whole sentences, each a message of its own.
"""

from __future__ import annotations

import gettext
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR: Final = Path(__file__).parent / "locales"
DOMAIN: Final = "goaltrack"
DEFAULT_LOCALE: Final = "en"


def locale_tag(directory: str) -> str:
    """The API's tag (BCP 47, `pt-BR`) of a catalogue directory (gettext's `pt_BR`)."""
    return directory.replace("_", "-")


def catalogue_path(tag: str) -> Path:
    return LOCALE_DIR / tag.replace("-", "_") / "LC_MESSAGES" / f"{DOMAIN}.po"


def _compile(path: Path) -> tuple[gettext.GNUTranslations, frozenset[str], frozenset[str]]:
    """The catalogue as gettext reads it, the ids of its messages and of those with plural
    forms."""
    with path.open("rb") as po:
        catalog = read_po(po, abort_invalid=True)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)  # fuzzy entries are left out, as msgfmt does
    buffer.seek(0)
    ids = frozenset(
        str(message.id[0] if message.pluralizable else message.id)
        for message in catalog
        if message.id
    )
    plurals = frozenset(str(message.id[0]) for message in catalog if message.pluralizable)
    return gettext.GNUTranslations(buffer), ids, plurals


def _load() -> tuple[dict[str, gettext.GNUTranslations], frozenset[str], frozenset[str]]:
    found = sorted(
        locale_tag(directory.name)
        for directory in LOCALE_DIR.iterdir()
        if (directory / "LC_MESSAGES" / f"{DOMAIN}.po").is_file()
    )
    english, ids, plurals = _compile(catalogue_path(DEFAULT_LOCALE))
    catalogues = {DEFAULT_LOCALE: english}
    for tag in found:
        if tag != DEFAULT_LOCALE:
            catalogues[tag], _, _ = _compile(catalogue_path(tag))
            # A message a catalogue lacks (tests/test_i18n.py fails on that) reads as English.
            catalogues[tag].add_fallback(english)
    return catalogues, ids, plurals


# The English catalogue's ids are every message's (tests/test_i18n.py holds the others to them).
CATALOGUES, MESSAGE_IDS, PLURAL_IDS = _load()
# Every locale the server writes in, English first (the API's `Locale`).
LOCALES: Final = tuple(CATALOGUES)


def t(locale: str, message_id: str, /, **values: Any) -> str:
    """The message in `locale` (English for a locale we do not have), its fields filled in from
    `values`; a message with plural forms takes the form for `values["count"]`."""
    catalogue = CATALOGUES.get(locale) or CATALOGUES[DEFAULT_LOCALE]
    if message_id in PLURAL_IDS:
        text = catalogue.ngettext(message_id, message_id, int(values["count"]))
    else:
        text = catalogue.gettext(message_id)
    return text.format(**values) if values else text


def translator(locale: str) -> Any:
    """`t` bound to one locale (for templates: `{{ t("page.title") }}`)."""

    def bound(message_id: str, /, **values: Any) -> str:
        return t(locale, message_id, **values)

    return bound


def _tag_index(locales: tuple[str, ...]) -> Mapping[str, str]:
    """Lower-cased tag -> our tag, and each primary language -> our first locale of it (`pt` and
    `pt-PT` read `pt-BR`: Portuguese is closer than English)."""
    index: dict[str, str] = {}
    for tag in locales:
        index[tag.lower()] = tag
        index.setdefault(tag.split("-")[0].lower(), tag)
    return index


_BY_TAG: Final = _tag_index(LOCALES)


def _quality(parameters: list[str]) -> float:
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0  # a malformed weight counts as "not wanted"
    return 1.0


def negotiate(accept_language: str | None) -> str:
    """The locale for an `Accept-Language` header (RFC 9110, 12.5.4): its ranges by q-value
    (ties in the order sent; q=0 means "not this one"), each matched exactly, then by its
    primary language (`de-AT` -> `de`, `pt` -> `pt-BR`); `*` or nothing we have -> English."""
    ranges: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")[:32]):
        tag, *parameters = part.split(";")
        tag = tag.strip().lower()
        quality = _quality(parameters)
        if tag and quality > 0:
            ranges.append((-quality, position, tag))
    for _, _, tag in sorted(ranges):
        if tag == "*":
            return DEFAULT_LOCALE
        found = _BY_TAG.get(tag) or _BY_TAG.get(tag.split("-")[0])
        if found is not None:
            return found
    return DEFAULT_LOCALE
