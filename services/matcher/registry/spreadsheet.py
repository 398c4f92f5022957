"""A CSV file as an office saves it from a spreadsheet: UTF-8 (with or
without BOM) or Big5, a header row naming the columns in English or in
Chinese (`員工編號` for `employee_id`), in any order. Cells are read
NFKC-normalized, so full-width letters, digits and punctuation typed with a
Chinese input method (full-width `09:00`, `；`) read as their ASCII forms.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Mapping, Sequence

from services.office_calendar.dgpa_csv import CalendarFileError, decode
from services.runtime.i18n import tr

# A table's columns: each one's name in the code, and the Chinese headers
# that name it as well.
Columns = Mapping[str, Sequence[str]]


def normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


Row = tuple[int, dict[str, str]]  # its line as a spreadsheet numbers it; its cells


def read_table(
    content: bytes, columns: Columns, optional: frozenset[str] = frozenset()
) -> tuple[list[Row], list[str]]:
    """The file's rows, each with its cells keyed by the columns' names in
    the code (other columns left out; an `optional` one the file lacks is
    empty), or what is wrong with its header. Blank rows (a spreadsheet's
    trailing ones) are left out."""
    try:
        text = decode(content)
    except CalendarFileError:
        return [], [tr("the file is neither UTF-8 nor Big5 text")]
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, [])
        rows = list(reader)
    except csv.Error as error:
        return [], [tr("line {line}: {error}", line=reader.line_num, error=error)]
    names = {}
    for name, headers in columns.items():
        names[name.lower()] = name
        names.update({normal(h): name for h in headers})
    where: dict[str, int] = {}
    problems = []
    for n, cell in enumerate(header):
        column = names.get(normal(cell).lower()) or names.get(normal(cell))
        if column is None:
            continue  # a column the import does not read (names, notes, ...)
        if column in where:
            problems.append(tr("line 1: two columns are {column}", column=_both(column, columns)))
        where[column] = n
    missing = [_both(c, columns) for c in columns if c not in where and c not in optional]
    if missing:
        problems.append(tr("line 1: missing columns: {columns}", columns=", ".join(missing)))
    if problems:
        return [], problems
    return [
        (
            line,
            {
                **dict.fromkeys(optional, ""),
                **{name: normal(row[n]) if n < len(row) else "" for name, n in where.items()},
            },
        )
        for line, row in enumerate(rows, start=2)
        if any(cell.strip() for cell in row)
    ], []


def _both(name: str, columns: Columns) -> str:
    """`employee_id (員工編號)`: a column as either header would name it."""
    return f"{name} ({columns[name][0]})" if columns[name] else name
