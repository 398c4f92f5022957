"""The reference booking page (services/edge/page), served by the edge at
its root: each file one route answered by Envoy itself (a direct response),
so the page comes from the same origin as the calls it makes, with no file
server and no CORS to configure for it.

The files are read when the configuration is rendered (at start, or by the
edge pod's init container from the suite's image), so the page a browser
gets always matches the services' version. Its headers keep it to itself:
scripts, styles and calls from its own origin only (Content-Security-Policy),
no framing, no referrer leaving with a call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PAGE_DIR = Path(__file__).parent / "page"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # A new release's page is fetched at once; the files are small.
    "cache-control": "no-cache",
}


def page_files(folder: Path = PAGE_DIR) -> dict[str, Path]:
    """URL path -> file, for every file of the page ("/" is the index)."""
    files = {
        f"/{path.relative_to(folder).as_posix()}": path
        for path in sorted(folder.rglob("*"))
        if path.suffix in CONTENT_TYPES
    }
    if f"/{INDEX}" in files:
        files["/"] = files[f"/{INDEX}"]
    return files


def page_routes(folder: Path = PAGE_DIR) -> list[dict[str, Any]]:
    """One route per file, answered by Envoy with the file's content."""
    return [
        {
            "match": {"path": path, "headers": [_method_is_read()]},
            "direct_response": {
                "status": 200,
                "body": {"inline_string": file.read_text(encoding="utf-8")},
            },
            "response_headers_to_add": [
                _header(name, value)
                for name, value in {
                    "content-type": CONTENT_TYPES[file.suffix],
                    **HEADERS,
                }.items()
            ],
        }
        for path, file in page_files(folder).items()
    ]


def _method_is_read() -> dict[str, Any]:
    return {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}


def _header(name: str, value: str) -> dict[str, Any]:
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def largest_body(routes: list[dict[str, Any]]) -> int:
    """The largest page file, in bytes: Envoy's limit for a direct
    response's body must be at least that."""
    bodies = [r["direct_response"]["body"]["inline_string"] for r in routes]
    return max((len(b.encode()) for b in bodies), default=0)
