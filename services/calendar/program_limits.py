"""How large a programme file may be, checked in time linear in the file:
its size and depth on the text, before tomllib reads it, its keys and list
items on what tomllib made of it, before anything else does. A hostile
file is refused in a fraction of a second, not after seconds or minutes.

A county's programme is a few hundred lines (the example is 6 KB, nested 3
deep); the limits sit far above any real one and far below what makes
parsing or validating slow: tomllib recurses once per nested list or
inline table (a file nested 10,000 deep raises RecursionError) and checks
a dotted key in time quadratic in its parts, so depth is measured on the
text, before tomllib sees it.
"""

from __future__ import annotations

import re
from typing import Any

MAX_PROGRAM_BYTES = 1_000_000
MAX_DEPTH = 10  # levels of tables and lists below the top
MAX_KEYS = 20_000  # keys in all of the file's tables together
MAX_ITEMS = 20_000  # items in all of its lists together: ids, roles, busy times...
# People named at activities, each role counted once per person who has it
# (fifty trainings for a role of 5,000 staff are 250,000): a role of 10,000
# people named by 5,000 activities would otherwise expand a 100 KB file
# into fifty million names.
MAX_ATTENDEES = 1_000_000

# The tokens that open or close a level, or separate keys, outside strings
# and comments. Strings and comments are matched whole so that a bracket
# or a dot inside them counts for nothing. A string left open ends at its
# line's end (or the file's): tomllib refuses it there anyway, and a
# pattern that could fail would be tried again from each later quote,
# quadratic in a line of \"\"\"...
_TOKENS = re.compile(
    r'"""(?:\\[\s\S]?|[^\\])*?(?:"""|\Z)'
    r"|'''[\s\S]*?(?:'''|\Z)"
    r'|"(?:\\[^\n]?|[^"\\\n])*(?:"|(?=\n)|\Z)'
    r"|'[^'\n]*(?:'|(?=\n)|\Z)"
    r"|#[^\n]*"
    # runs of openers, of closers and of separators each read as one
    r"|[\[{]+|[\]}]+|[=,\n]+|\."
)


def size_problem(text: str) -> str | None:
    size = len(text.encode())
    if size > MAX_PROGRAM_BYTES:
        return f"at most {MAX_PROGRAM_BYTES:,} bytes (this file has {size:,})"
    return None


def depth_problem(text: str) -> str | None:
    """Whether the text nests deeper than MAX_DEPTH, as tomllib would read
    it: each open list or inline table is a level, and so is each part of
    a dotted key (`a.b.c` nests c two levels below a). Numbers' decimal
    points count too, which only ever errs by one level towards refusing."""
    depth = dots = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        if first in "[{":
            depth, dots = depth + len(token), 0
        elif first in "]}":
            depth, dots = max(depth - len(token), 0), 0
        elif first == ".":
            dots += 1
        elif first in "=,\n":
            dots = 0
        else:  # a string or a comment
            continue
        if depth + dots > MAX_DEPTH:
            return depth_words()
    return None


def depth_words() -> str:
    return f"at most {MAX_DEPTH} levels of nested tables and lists"


def shape_problem(data: dict[str, Any]) -> str | None:
    """Whether the parsed file goes past MAX_DEPTH (a table header's dotted
    key and the dotted keys under it add up, which the text check sees one
    at a time), MAX_KEYS or MAX_ITEMS. Walked with a stack of its own: the
    file's depth must not become the interpreter's."""
    keys = items = deepest = 0
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(data, 0)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children: Any
        if isinstance(node, dict):
            keys += len(node)
            children = node.values()
        else:
            items += len(node)
            children = node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    if deepest > MAX_DEPTH:
        return depth_words()
    if keys > MAX_KEYS:
        return f"at most {MAX_KEYS:,} keys in all tables together (this file has {keys:,})"
    if items > MAX_ITEMS:
        return (
            f"at most {MAX_ITEMS:,} list items (ids, roles, busy times and the like) "
            f"in all lists together (this file has {items:,})"
        )
    return None


def attendees_words() -> str:
    return (
        f"at most {MAX_ATTENDEES:,} attendees over all activities together, "
        "each role counted once per person who has it"
    )
