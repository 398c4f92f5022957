"""How a programme file's mistakes are reported: each with the key that
holds it and, where the file shows it, the line."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    key: str  # e.g. "activities[3].windows"
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.key} (line {self.line})" if self.line else self.key
        return f"{where}: {self.message}"


class ProgramFileError(ValueError):
    def __init__(self, mistakes: list[Mistake]) -> None:
        self.mistakes = mistakes
        super().__init__("\n".join(str(m) for m in mistakes))


class ProgramTooLarge(ProgramFileError):
    """The file goes past one of `program_limits`' limits, so it was not
    read further (and none of its other mistakes are known)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__([Mistake("(file)", None, message)])


_KEY_PART = re.compile(r"([A-Za-z_][\w-]*)(?:\[(\d+)\])?")
_KEY_LINE = re.compile(r"\s*(?:\[([\w-]+)\]|([\w-]+)\s*=)")


def listed(names: list[str], most: int = 20) -> str:
    """Names for a message, the first `most` of them: a file of thousands
    of roles must not put all of them in each of thousands of mistakes."""
    if len(names) > most:
        return f"{', '.join(names[:most])} and {len(names) - most:,} more"
    return ", ".join(names) or "none"


class LineIndex:
    """Where each table header and key sits in the file, gathered in one
    pass: looking a mistake's line up costs a dictionary read and a binary
    search, so a file with thousands of mistakes is reported in linear time
    rather than scanned once per mistake."""

    def __init__(self, text: str) -> None:
        self._headers: dict[str, list[int]] = {}  # `[[name]]` lines, in order
        self._keys: dict[str, list[int]] = {}  # `[name]` and `name =` lines, in order
        for n, line in enumerate(text.splitlines()):
            stripped = line.strip()
            if stripped.startswith("[[") and stripped.endswith("]]"):
                self._headers.setdefault(stripped[2:-2], []).append(n)
            match = _KEY_LINE.match(line)
            if match:
                self._keys.setdefault(match.group(1) or match.group(2), []).append(n)

    def line_of(self, key: str) -> int | None:
        """The line of `key` ("activities[2].windows"): after the third
        `[[activities]]` header, the first `windows =` line."""
        at = 0
        for name, index in _KEY_PART.findall(key):
            headers = self._headers.get(name)
            if index and headers:  # the index-th table of an array of tables
                if int(index) >= len(headers):
                    return None
                at = headers[int(index)]
            else:  # a key (an array's items are on its line)
                lines = self._keys.get(name, [])
                found = bisect.bisect_left(lines, at)
                if found == len(lines):
                    return None
                at = lines[found]
        return at + 1
