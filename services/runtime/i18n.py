"""Words for people, in their language: gettext catalogs managed with
Babel (`services/runtime/locale/<language>/LC_MESSAGES/eap.po`, message ids
in English, marked N_ where they are written, or written as `tr("...")`
where they are shown at once), Traditional Chinese (zh_TW) and English.
A call's language is what its `accept-language` metadata asks for among
those, else EAP_DEFAULT_LANGUAGE (zh-TW): the people who book sessions and
the HR staff who run the programme read Traditional Chinese.

A command-line tool's language (`choose_cli_language`) is its `--lang`,
else what the locale variables ask for, read as gettext reads them
(LC_ALL, LC_MESSAGES, LANG; LANGUAGE's list first unless the locale is C),
else EAP_DEFAULT_LANGUAGE. `zh_TW.UTF-8` (or any Chinese but the
mainland's simplified) is Traditional Chinese and `en_US.UTF-8` English. A
`C` or `POSIX` locale is English: gettext's own rule (a programme in the C
locale prints its message ids), and what scripts, containers and CI set; a
person who reads Chinese has a Chinese locale, or says `--lang zh-TW`. A
language we have no catalog for (`ja_JP`), or no locale at all, gets
EAP_DEFAULT_LANGUAGE.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from services.rules.codes import RuleCode
from services.rules.explanations import EXPLANATIONS
from services.rules.explanations import N_ as N_  # re-exported: the mark for every module

LOCALES = Path(__file__).parent / "locale"
LANGUAGES = ("zh_TW", "en")
DEFAULT_LANGUAGE = "zh_TW"

_language_var: ContextVar[str] = ContextVar("language", default=DEFAULT_LANGUAGE)
# The language a command-line run chose (eapctl's --lang, or its locale),
# which a tool it runs keeps unless its own --lang says otherwise.
_cli_language: ContextVar[str | None] = ContextVar("cli_language", default=None)
HTML_LANGUAGES = {"zh_TW": "zh-Hant-TW", "en": "en"}

# A text in every language (LANGUAGES), for words kept or sent before
# anyone knows who reads them (a plan's reasons, stored by a background job).
Words = Mapping[str, str]

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


def explanation(rule: str, language: str | None = None) -> str | None:
    """What the rule named `rule` means to a person, in `language` (the
    current call's by default); None for a name that is no RuleCode."""
    known = RuleCode.__members__.get(rule)
    return translate(EXPLANATIONS[known], language) if known in EXPLANATIONS else None


def translate(message_id: str, language: str | None = None) -> str:
    """`message_id` in `language` (the current call's by default); itself
    where the catalog has no translation."""
    found = catalog(language or current_language()).get(message_id)
    return str(found.string) if found is not None and found.string else message_id


def tr(message_id: str, /, **values: object) -> str:
    """`message_id` in the current language with its `{name}` placeholders
    filled from `values`. `make messages` extracts tr("...") as it does N_."""
    text = translate(message_id)
    return text.format(**values) if values else text


def in_every_language(message_id: str, /, **values: object) -> dict[str, str]:
    """`message_id` in each of LANGUAGES, filled from `values`; a value
    that is itself Words gives each language its own."""
    return {
        language: translate(message_id, language).format(
            **{k: pick(v, language) if isinstance(v, Mapping) else v for k, v in values.items()}
        )
        for language in LANGUAGES
    }


def pick(words: Words, language: str | None = None) -> str:
    """`words` in `language` (the current one by default), else in English."""
    return words.get(language or current_language()) or words.get("en") or ""


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


@contextlib.contextmanager
def speaking(language: str) -> Iterator[None]:
    """The current language is `language` inside the block, and again what
    it was after it (tests, and a tool that writes one thing in another)."""
    token = _language_var.set(language)
    try:
        yield
    finally:
        _language_var.reset(token)


def html_lang(language: str | None = None) -> str:
    """What an HTML page's lang attribute says for `language`: `zh-Hant-TW`."""
    return HTML_LANGUAGES[language or current_language()]


def locale_language(env: Mapping[str, str]) -> str | None:
    """Which of LANGUAGES the POSIX locale variables ask for, or None when
    they ask for none of them (or are unset). See the module's notes."""
    locale = next((env[n] for n in ("LC_ALL", "LC_MESSAGES", "LANG") if env.get(n)), "")
    if locale and _bare(locale) in ("C", "POSIX"):
        return "en"
    wanted = [*env.get("LANGUAGE", "").split(":"), locale] if locale else []
    for tag in wanted:
        language = negotiate(_bare(tag).replace("_", "-"), "") if _bare(tag) else ""
        if language:
            return language
    return None


def _bare(locale: str) -> str:
    """`zh_TW.UTF-8@stroke` without its codeset and modifier: `zh_TW`."""
    return locale.partition(".")[0].partition("@")[0].strip()


def choose_cli_language(
    asked: str | None = None, default: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Sets, and returns, a command-line run's language: `asked` (its --lang,
    as `language_option` reads it), else the one this run chose already,
    else the locale's, else `default` (EAP_DEFAULT_LANGUAGE, config.py)."""
    language = asked or _cli_language.get()
    if language is None:
        env = os.environ if env is None else env
        if default is None:
            from services.runtime.config import default_language  # config imports this module

            default = default_language(env)
        language = locale_language(env) or default
    _cli_language.set(language)
    set_language(language)
    return language


def language_option(value: str) -> str:
    """An argparse type: `zh-TW`, `zh_TW`, `zh-Hant`, `en`, ... as one of LANGUAGES."""
    language = negotiate(value, "")
    if not language:
        raise argparse.ArgumentTypeError(f"{value!r}: one of zh-TW, en")
    return language


def add_language_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lang",
        type=language_option,
        metavar="zh-TW|en",
        help="the language of what it writes for people (default: LANG, else EAP_DEFAULT_LANGUAGE)",
    )
