"""Words for people, in their language: gettext catalogs managed with
Babel (`services/runtime/locale/<language>/LC_MESSAGES/eap.po`, message ids
in English, marked N_ where they are written), Traditional Chinese (zh_TW)
and English. A call's language is what its `accept-language` metadata asks
for among those, else EAP_DEFAULT_LANGUAGE (zh-TW): the people who book
sessions and the HR staff who run the programme read Traditional Chinese.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from services.rules.explanations import N_

LOCALES = Path(__file__).parent / "locale"
LANGUAGES = ("zh_TW", "en")
DEFAULT_LANGUAGE = "zh_TW"

_language_var: ContextVar[str] = ContextVar("language", default=DEFAULT_LANGUAGE)

# What each kind of refusal means, where no rule says more.
REFUSALS = {
    "INVALID_ARGUMENT": N_("Some fields are not right: {fields}."),
    "FAILED_PRECONDITION": N_("A rule of the programme does not allow this."),
    "NOT_FOUND": N_("What you asked for was not found."),
    "ALREADY_EXISTS": N_("This was already submitted, differently."),
    "UNAUTHENTICATED": N_("Please sign in again."),
    "PERMISSION_DENIED": N_("You may not do this."),
    "UNAVAILABLE": N_("The service is unavailable for a moment: please try again."),
    "ABORTED": N_("Something changed meanwhile: please try again."),
    "RESOURCE_EXHAUSTED": N_("The service is busy: please try again in a moment."),
    "INTERNAL": N_("Something went wrong on our side; it has been recorded."),
}


@functools.cache
def catalog(language: str) -> Catalog:
    with (LOCALES / language / "LC_MESSAGES" / "eap.po").open("rb") as file:
        return read_po(file, locale=language)


def translate(message_id: str, language: str | None = None) -> str:
    """`message_id` in `language` (the current call's by default); itself
    where the catalog has no translation."""
    found = catalog(language or current_language()).get(message_id)
    return str(found.string) if found is not None and found.string else message_id


def negotiate(accept_language: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The best of LANGUAGES for an `accept-language` value, by its q weights."""
    wanted: list[tuple[float, int, str]] = []
    for n, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag and weight > 0:
            wanted.append((-weight, n, tag.strip()))
    for _, _, tag in sorted(wanted):
        try:
            locale = Locale.parse(tag.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            continue
        if locale.language == "zh":
            # Taiwan's Chinese for any Chinese but the mainland's simplified.
            if locale.script == "Hans" or locale.territory in ("CN", "SG"):
                continue
            return "zh_TW"
        if locale.language == "en":
            return "en"
    return default


def bcp47(language: str) -> str:
    """`zh_TW` as a LocalizedMessage names it: `zh-TW`."""
    return language.replace("_", "-")


def current_language() -> str:
    return _language_var.get()


def set_language(language: str) -> None:
    _language_var.set(language)
