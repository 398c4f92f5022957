"""What every benchmark writes into bench/RESULTS.md: its own section,
between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers (other
sections are left as they are), and the facts of the machine it ran on."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"


def marks(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(name: str, section: str) -> None:
    """Replaces the section `name` (markers included in `section`), or
    appends it when RESULTS.md has none yet."""
    start_mark, end_mark = marks(name)
    if RESULTS.exists():
        text = RESULTS.read_text()
        start, end = text.find(start_mark), text.find(end_mark)
        if start != -1 and end > start:
            rest = text[end + len(end_mark) :].lstrip("\n")
            text = text[:start] + section + ("\n" + rest if rest else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
    else:
        text = "# Benchmark results\n\n" + section
    RESULTS.write_text(text)


def _first_line(path: str, prefix: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return "unknown"


def machine_facts() -> dict[str, str]:
    """Cores, CPU, memory, kernel, Python, and the commit the code is at."""
    info = {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _first_line("/proc/cpuinfo", "model name"),
        "memory": _first_line("/proc/meminfo", "MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(Exception):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "services"], cwd=ROOT, capture_output=True
        ).stdout
        info["code"] = f"commit {head}" + (
            f" with uncommitted changes under services/ (diff sha1 "
            f"{hashlib.sha1(diff).hexdigest()[:10]})"
            if diff
            else ", services/ clean"
        )
    return info


def header(
    title: str, command: str, make_target: str, started: str, extra_facts: str = ""
) -> list[str]:
    """The lines every section starts with: its title, the command that
    wrote it, when, and the machine (plus `extra_facts` on the Python line)."""
    info = machine_facts()
    return [
        f"## {title}",
        "",
        f"Command: `{command}` (also `make {make_target}`)",
        "",
        f"Date: {started} (UTC)",
        "",
        "Machine:",
        "",
        f"- nproc: {info['nproc']}; CPU: {info['cpu']}; memory: {info['memory']}",
        f"- Linux {info['kernel']}; Python {info['python']}{extra_facts}",
        f"- code: {info.get('code', 'unknown')}",
        "",
    ]
