"""A command-line tool's language: --lang, else the locale as gettext reads
it (C and POSIX are English), else EAP_DEFAULT_LANGUAGE."""

from __future__ import annotations

import argparse
import contextvars
import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime import i18n

EAPCTL = str(Path(sys.executable).with_name("eapctl"))
FIRST_WEEK = ("--from", "2027-01-04", "--to", "2027-01-08")


def test_the_locale_variables_as_gettext_reads_them() -> None:
    for env, language in (
        ({"LANG": "zh_TW.UTF-8"}, "zh_TW"),
        ({"LANG": "zh_TW.Big5"}, "zh_TW"),
        ({"LANG": "zh_HK.UTF-8"}, "zh_TW"),  # Traditional Chinese
        ({"LANG": "zh_CN.UTF-8"}, None),  # simplified: not ours
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),  # the untranslated locale
        ({"LANG": "POSIX"}, "en"),
        ({"LANG": "ja_JP.UTF-8"}, None),
        ({}, None),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_TW.UTF-8"}, "zh_TW"),  # LC_ALL first
        ({"LANG": "zh_TW.UTF-8", "LC_MESSAGES": "en_GB.UTF-8"}, "en"),
        ({"LANG": "fr_FR.UTF-8", "LANGUAGE": "ja:zh_TW:en"}, "zh_TW"),  # its list, in order
        ({"LANG": "C", "LANGUAGE": "zh_TW"}, "en"),  # LANGUAGE is ignored in C
    ):
        assert i18n.locale_language(env) == language, env


def _chosen(*steps: tuple[str | None, dict[str, str]], default: str = "zh_TW") -> list[str]:
    """Each step's choice, in one run (a fresh context, as a process is)."""

    def run() -> list[str]:
        found = []
        for asked, env in steps:
            found.append(i18n.choose_cli_language(asked, default, env))
            assert i18n.current_language() == found[-1]
        return found

    return contextvars.copy_context().run(run)


def test_lang_then_the_run_s_choice_then_the_locale_then_the_default() -> None:
    assert _chosen((None, {})) == ["zh_TW"]  # no locale at all: EAP_DEFAULT_LANGUAGE
    assert _chosen((None, {}), default="en") == ["en"]
    assert _chosen((None, {"LANG": "C.UTF-8"})) == ["en"]
    assert _chosen(("zh_TW", {"LANG": "C.UTF-8"})) == ["zh_TW"]
    # eapctl --lang zh-TW match report ...: the tool keeps eapctl's choice
    # unless its own --lang says otherwise.
    assert _chosen(("zh_TW", {}), (None, {"LANG": "C"})) == ["zh_TW", "zh_TW"]
    assert _chosen(("zh_TW", {}), ("en", {})) == ["zh_TW", "en"]


def test_the_option_takes_tags_people_write() -> None:
    for value, language in (("zh-TW", "zh_TW"), ("zh_TW", "zh_TW"), ("zh-Hant", "zh_TW")):
        assert i18n.language_option(value) == language
    assert i18n.language_option("en-US") == "en"
    with pytest.raises(argparse.ArgumentTypeError):
        i18n.language_option("zh-CN")


def test_eapctl_follows_lang_and_refuses_a_language_it_has_not() -> None:
    run = subprocess.run(
        [EAPCTL, "--lang", "xx", "migrate"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "one of zh-TW, en" in run.stderr
    chinese = subprocess.run(
        [EAPCTL, "calendar", "find-time", "missing.toml", "--required", "a", *FIRST_WEEK],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LANG": "zh_TW.UTF-8"},
    )
    assert chinese.returncode == 2
    assert chinese.stderr.startswith("find-time：無法讀取 missing.toml："), chinese.stderr
