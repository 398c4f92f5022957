"""The typed web clients in gen/web: made from the protos as they are now,
one module per proto with every service's descriptor, for connect-web."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("webgen", ROOT / "tools" / "webgen.py")
assert spec is not None and spec.loader is not None
webgen = importlib.util.module_from_spec(spec)
spec.loader.exec_module(webgen)


def test_the_web_clients_were_made_from_these_protos() -> None:
    recorded = (ROOT / "gen" / "web" / "SOURCES.sha256").read_text().strip()
    assert recorded == webgen.sources_digest(), "run `make proto` (it needs Node)"


def test_every_service_has_its_descriptor() -> None:
    for proto in (ROOT / "protos").rglob("*.proto"):
        relative = proto.relative_to(ROOT / "protos").with_suffix("")
        module = ROOT / "gen" / "web" / f"{relative}_pb.js"
        declarations = module.with_suffix(".d.ts")
        assert module.is_file() and declarations.is_file(), relative
        for service in re.findall(r"^service (\w+)", proto.read_text(), re.M):
            assert f"export const {service} = " in module.read_text(), service
            assert f"export declare const {service}: GenService<" in declarations.read_text()


def test_the_pages_module_was_bundled_from_these_clients() -> None:
    """services/edge/page/clients.js (what the edge serves to browsers) names
    the same sources in its first line: a stale or hand-edited bundle fails."""
    first = webgen.BUNDLE.read_text().split("\n", 1)[0]
    assert first == webgen.BANNER + webgen.sources_digest(), "run `make proto` (it needs Node)"
    bundle = webgen.BUNDLE.read_text()
    for name in ("MatcherService", "LocalizedMessageSchema", "createConnectTransport"):
        assert name in bundle, name
