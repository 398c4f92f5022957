"""Programme files read off the event loop.

Parsing and checking a file is pure Python: on the event loop, a file near
the limits would hold up every call the process serves (quota and matcher
too, under `eapctl serve all`) for as long as it takes: while files of
45,000 ids were refused one after another, a Ping's 99th percentile was
395 ms. A thread is not enough either, as it holds the interpreter lock:
48 to 112 ms over three runs on two busy cores (8 to 27 ms with a
process). So:

- a file a caller sends (`check_program`) is read in a process of its own,
  which hands back only the name and year, or the first mistakes;
- a stored file, read again to use its plan (`read_program_off_loop`),
  is read on a small thread pool: it passed the checks once, and the
  whole programme must come back, which from a process would be unpickled
  on the event loop (50 ms for a programme of 3,000 people).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from services.calendar import program_limits
from services.calendar.program import Program
from services.calendar.program_file import ProgramFileError, ProgramTooLarge, parse_program
from services.runtime.errors import FieldViolation, InvalidArgument, Unavailable

log = logging.getLogger("eap.calendar")

# A refusal shows its first ten; more only cost pickling on the way back.
RETURNED_MISTAKES = 100
# The interpreter runs one thread at a time anyway; two let a small file
# pass a large one.
_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="program-file")


def read_program(text: str, year: int = 0) -> Program:
    """The programme file, or INVALID_ARGUMENT naming each mistake's key
    and line (or the limit the file goes past)."""
    try:
        program = parse_program(text)
    except ProgramTooLarge as error:
        raise InvalidArgument.single("program_toml", error.message) from None
    except ProgramFileError as error:
        raise InvalidArgument(
            [
                FieldViolation(
                    f"program_toml: {m.key}",
                    f"line {m.line}: {m.message}" if m.line else m.message,
                )
                for m in error.mistakes
            ]
        ) from None
    return replace(program, year=year) if year else program


async def read_program_off_loop(text: str, year: int = 0) -> Program:
    """`read_program` on the thread pool, for a file read before."""
    return await asyncio.get_running_loop().run_in_executor(_THREADS, read_program, text, year)


def _checked(text: str, year: int) -> tuple[str, int] | tuple[list[tuple[str, str]], int]:
    """In the reader process: the programme's name and year, or its first
    mistakes as (field, description) and how many there are."""
    try:
        program = read_program(text, year)
    except InvalidArgument as error:
        shown = error.violations[:RETURNED_MISTAKES]
        return [(v.field, v.description) for v in shown], len(error.violations)
    return program.name, program.year


class _Readers:
    """One reader process, started at the first use (or `warm_up`) and
    started again if it dies: a pool whose process died refuses all work."""

    def __init__(self) -> None:
        self._pool: Executor | None = None

    def pool(self) -> Executor:
        if self._pool is None:
            # Not forked: a child of a process with gRPC's threads running
            # may inherit their locks held.
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def lost(self, pool: Executor) -> None:
        if self._pool is pool:
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


_READERS = _Readers()


def warm_up() -> None:
    """Starts the reader process now, so the first file need not wait
    for an interpreter to start."""
    _READERS.pool().submit(int)


async def check_program(text: str, year: int) -> tuple[str, int]:
    """The name and year of a programme file a caller sent, or
    INVALID_ARGUMENT naming its mistakes (or the limit it goes past)."""
    problem = program_limits.size_problem(text)
    if problem:  # refused at once, not after the files queued before it
        raise InvalidArgument.single("program_toml", problem)
    pool = _READERS.pool()
    try:
        outcome = await asyncio.get_running_loop().run_in_executor(pool, _checked, text, year)
    except BrokenProcessPool:
        _READERS.lost(pool)
        log.warning("programme reader process stopped")
        raise Unavailable("the programme reader stopped; retry") from None
    found, count = outcome
    if isinstance(found, str):
        return found, count
    violations = [FieldViolation(field, description) for field, description in found]
    if count > len(found):
        shown = f"{count:,} mistakes in all; the first {len(found)} shown"
        violations.append(FieldViolation("program_toml", shown))
    raise InvalidArgument(violations)
