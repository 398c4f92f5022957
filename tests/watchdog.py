"""A test still running after EAP_TEST_HANG_SECONDS (300; 0: never) ends its
test process: every thread's stack and every event loop's tasks are printed,
then the process exits 3 (under pytest-xdist, the test fails as its worker
crashed, and a new worker runs the rest). A hung test would otherwise hold CI to its 90-minute limit
and show only threads, while what hangs in an asyncio test is a task (one
that does not end when the loop is closed, say)."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HANG_SECONDS = float(os.environ.get("EAP_TEST_HANG_SECONDS", "300"))


def _report(nodeid: str, capture: Any) -> None:
    if capture is not None:  # pytest holds stderr for the test; give it back
        capture.suspend_global_capture(in_=False)
    out = sys.stderr
    print(f"\n{nodeid}: still running after {HANG_SECONDS:g} s; stopping the run", file=out)
    faulthandler.dump_traceback(file=out)
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if loop.is_closed():
            continue
        for task in asyncio.all_tasks(loop):
            print(f"\ntask {task.get_name()} (done: {task.done()}):", file=out)
            task.print_stack(file=out)
    out.flush()
    os._exit(3)


@contextmanager
def watching(nodeid: str, capture: Any) -> Iterator[None]:
    """`capture`: pytest's capture manager, suspended to report."""
    if HANG_SECONDS <= 0:
        yield
        return
    timer = threading.Timer(HANG_SECONDS, _report, args=(nodeid, capture))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
