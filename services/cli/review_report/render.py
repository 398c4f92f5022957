"""The review report written out: a self-contained HTML page (nothing to
load, it opens offline and prints) and a CSV file of the same tables, one
under another, in UTF-8 with a byte-order mark so that Excel in a zh-TW
office opens the Chinese as Chinese."""

from __future__ import annotations

import csv
import html
import io

from services.cli.review_report.tables import WITHHELD, Kind, Report, Table, written
from services.runtime import i18n

STYLE = """
body { font-family: system-ui, "Noto Sans TC", "Microsoft JhengHei", sans-serif; margin: 2em;
  color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f0f3f6; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.withheld { text-align: center; color: #777; }
p.note { font-size: 12px; color: #555; margin: .4em 0; }
footer { margin-top: 2em; font-size: 12px; color: #555; border-top: 1px solid #ddd;
  padding-top: .6em; }
@media print { body { margin: 1cm; } }
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _cell(value: object, kind: Kind) -> str:
    text = written(value, kind)  # type: ignore[arg-type]
    if text == WITHHELD and value is None:
        return f'<td class="withheld" title="{_esc(WITHHELD)}">{WITHHELD}<sup>*</sup></td>'
    numeric = kind is not Kind.TEXT
    return f'<td class="n">{_esc(text)}</td>' if numeric else f"<td>{_esc(text)}</td>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{_esc(c.heading)}</th>" for c in table.columns)
    body = "\n".join(
        "<tr>"
        + "".join(_cell(v, c.kind) for v, c in zip(row, table.columns, strict=True))
        + "</tr>"
        for row in table.rows
    )
    notes = "".join(f'<p class="note">{_esc(n)}</p>' for n in table.notes)
    return (
        f'<section id="{table.key}"><h2>{_esc(table.title)}</h2>\n'
        f"<table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n"
        f"{notes}</section>"
    )


def page(report: Report) -> str:
    lines = "".join(f"<p>{_esc(line)}</p>" for line in report.lines)
    tables = "\n".join(_table(t) for t in report.tables)
    return f"""<!doctype html>
<html lang="{i18n.html_lang()}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(report.title)}</title>
<style>{STYLE}</style></head><body>
<h1>{_esc(report.title)}</h1>
{lines}
{tables}
<footer><p>* {_esc(report.withheld_note)}</p></footer>
</body></html>
"""


def spreadsheet(report: Report) -> str:
    """The CSV text, byte-order mark first: write it as UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([report.title])
    for line in report.lines:
        writer.writerow([line])
    for table in report.tables:
        writer.writerow([])
        writer.writerow([table.title])
        writer.writerow([c.heading for c in table.columns])
        for row in table.rows:
            writer.writerow(
                [
                    written(v, c.kind, grouping=False)
                    for v, c in zip(row, table.columns, strict=True)
                ]
            )
        for note in table.notes:
            writer.writerow([note])
    writer.writerow([])
    writer.writerow([report.withheld_note])
    return "\ufeff" + out.getvalue()
