"""A programme file is bounded before it is read: too large, nested too
deep, with too many keys or list items, it is refused naming the limit;
within the limits, a file full of mistakes is still answered in time
linear in its size (it took 15-22 s once, for 185-394 KB); and the process
that reads callers' files is replaced when it dies."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from services.calendar import program_limits, program_reading
from services.calendar.program_file import ProgramFileError, ProgramTooLarge, parse_program
from services.runtime.errors import Unavailable

EXAMPLE = Path(__file__).resolve().parents[2] / "services/calendar/examples/pingtung-2027.toml"
HEAD = '[program]\nname = "Hostile"\nyear = 2027\n'
# A linear reading of the files below takes well under a second on a busy
# two-core machine; a quadratic one took 15 s and more.
LINEAR_SECONDS = 3.0


def refusal(text: str) -> str:
    started = time.perf_counter()
    with pytest.raises(ProgramTooLarge) as refused:
        parse_program(text)
    assert time.perf_counter() - started < LINEAR_SECONDS
    (mistake,) = refused.value.mistakes
    assert mistake.key == "(file)"
    return refused.value.message


def nested_arrays(depth: int) -> str:
    return HEAD + "deep = " + "[" * depth + "1" + "]" * depth + "\n"


@pytest.mark.parametrize(
    "text",
    [
        nested_arrays(10_000),
        HEAD + "deep = " + "{a = " * 10_000 + "1" + "}" * 10_000 + "\n",
        # tomllib checks a dotted key's every prefix (quadratic in its parts)
        HEAD + ".".join(["a"] * 30_000) + " = 1\n",
        HEAD + "[" + ".".join(["a"] * 10_000) + "]\nx = 1\n",
        HEAD + "[[" + ".".join(['"a"'] * 10_000) + "]]\n",
        # a header and the dotted keys under it, each within the limit
        HEAD + "[a.b.c.d.e.f]\ng.h.i.j.k.l = 1\n",
    ],
    ids=["arrays", "inline-tables", "dotted-key", "header", "quoted-header", "header-and-key"],
)
def test_a_file_nested_too_deep_is_refused_naming_the_limit(text: str) -> None:
    assert refusal(text) == "at most 10 levels of nested tables and lists"


def test_depth_counts_levels_not_brackets_in_strings_or_comments() -> None:
    assert program_limits.depth_problem(nested_arrays(program_limits.MAX_DEPTH)) is None
    assert program_limits.depth_problem(nested_arrays(program_limits.MAX_DEPTH + 1))
    quoted = "[[[[[[[[[[[[ a.b.c.d.e.f.g.h.i.j.k.l"
    for text in (
        f'title = "{quoted}"\n',
        f"title = '{quoted}'\n",
        f'title = """\n{quoted}\n"""\n',
        f"title = '''\n{quoted}\n'''\n",
        f"# {quoted}\n",
        f'title = "a \\" {quoted}"\n',
    ):
        assert program_limits.depth_problem(text) is None, text
    # The shipped programme nests three deep (activities, a table, its windows).
    assert program_limits.depth_problem(EXAMPLE.read_text()) is None


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed() -> None:
    text = HEAD + "# " + "x" * program_limits.MAX_PROGRAM_BYTES + "\n"
    message = refusal(text)
    assert message.startswith("at most 1,000,000 bytes (this file has 1,000,")
    # Counted in UTF-8, as the request carries it: 400,000 characters of Chinese are 1.2 MB.
    assert refusal(HEAD + f"# {'計畫' * 200_000}\n").startswith("at most 1,000,000 bytes")


def test_too_many_keys_or_list_items_are_refused_naming_the_limit() -> None:
    keys = HEAD + "".join(f"[[people]]\nid = 'p{n}'\nroles = []\n" for n in range(10_001))
    # program, people, name, year, and two keys in each of 10,001 people
    assert refusal(keys) == "at most 20,000 keys in all tables together (this file has 20,006)"
    ids = ", ".join(f'"{n}"' for n in range(45_000))
    text = HEAD + f'[[people]]\nids = [{ids}]\nroles = ["staff"]\n'
    assert 380_000 < len(text.encode()) < 420_000
    assert refusal(text) == (
        "at most 20,000 list items (ids, roles, busy times and the like) "
        "in all lists together (this file has 45,002)"
    )


def _mistakes_in_time(text: str) -> list[str]:
    started = time.perf_counter()
    with pytest.raises(ProgramFileError) as refused:
        parse_program(text)
    assert time.perf_counter() - started < LINEAR_SECONDS
    return [str(m) for m in refused.value.mistakes]


def test_thousands_of_unknown_keys_are_reported_in_linear_time() -> None:
    unknown = "".join(f"unknown_key_number_{n:05} = 'x'\n" for n in range(6_000))
    text = EXAMPLE.read_text().replace("[program]\n", f"[program]\n{unknown}", 1)
    assert 180_000 < len(text.encode()) < 400_000
    mistakes = _mistakes_in_time(text)
    assert len(mistakes) == 6_000
    last = 1 + text.splitlines().index("unknown_key_number_05999 = 'x'")
    assert mistakes[-1].startswith(
        f"program.unknown_key_number_05999 (line {last}): is not a key here (name, year,"
    )


def test_thousands_of_duplicate_ids_are_reported_in_linear_time() -> None:
    ids = ", ".join(f'"p{n % 6_000:04}"' for n in range(12_000))
    people = f'[[people]]\nids = [{ids}]\nroles = ["staff"]\n'
    activities = "".join(
        f'[[activities]]\nid = "a{n % 500}"\nduration_minutes = 60\n'
        'required = ["role:staff", "role:nobody"]\noptional = ["role:staff"]\n'
        for n in range(1_000)
    )
    mistakes = _mistakes_in_time(HEAD + people + activities)
    people_twice = [m for m in mistakes if m.startswith("people[")]
    assert len(people_twice) == 6_000
    assert people_twice[0].startswith("people[0].id (line ")
    assert people_twice[0].endswith(": 'p0000' appears more than once")
    activities_twice = [m for m in mistakes if m.startswith("activities[") and ".id " in m]
    assert len(activities_twice) == 500
    # A role of 12,000 people named by 1,000 activities reaches the cap on
    # attendees once, instead of expanding to 24 million names.
    assert sum("at most 1,000,000 attendees" in m for m in mistakes) == 1
    nobody = [m for m in mistakes if "no one has the role 'nobody'" in m]
    assert len(nobody) == 1_000
    assert nobody[0].endswith("(roles: staff)")


async def test_a_reader_process_that_dies_is_replaced() -> None:
    text = EXAMPLE.read_text()
    assert await program_reading.check_program(text, 0) == ("Pingtung County EAP 2027", 2027)
    pool = program_reading._READERS.pool()
    assert isinstance(pool, ProcessPoolExecutor)
    for process in list(pool._processes.values()):
        process.kill()
    with pytest.raises(Unavailable):
        # The pool notices its process gone while this call waits, or before.
        for _ in range(50):
            await program_reading.check_program(text, 0)
            await asyncio.sleep(0.1)
    assert await program_reading.check_program(text, 2028) == ("Pingtung County EAP 2027", 2028)
