"""Generate the typed web clients (gen/web) from protos/, or check them.

protoc-gen-es (pinned in tools/web/package-lock.json, run by buf) writes
JavaScript with TypeScript declarations: the messages and the service
descriptors that @connectrpc/connect-web's `createClient` takes. They are
committed, like gen/python, so that nobody needs Node but to regenerate.

`gen/web/SOURCES.sha256` records what they were made from (the protos, the
buf template, the lock file). `--check` regenerates and compares where Node
is at hand (installing the pinned plugin with `npm ci` if missing);
without Node it checks that record, so a proto changed without
regenerating is caught either way.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "gen" / "web"
TOOLS = ROOT / "tools" / "web"
TEMPLATE = TOOLS / "buf.gen.yaml"
PLUGIN = TOOLS / "node_modules" / ".bin" / "protoc-gen-es"
BUF = Path(sys.executable).parent / "buf"
RECORD = "SOURCES.sha256"


def sources_digest() -> str:
    digest = hashlib.sha256()
    inputs = [*sorted((ROOT / "protos").rglob("*.proto")), TEMPLATE, TOOLS / "package-lock.json"]
    for path in inputs:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _plugin() -> bool:
    """The pinned plugin, installed from the lock file if need be; False without npm."""
    if PLUGIN.exists():
        return True
    npm = shutil.which("npm")
    if npm is None:
        return False
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=TOOLS, check=True
    )
    return PLUGIN.exists()


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(BUF), "generate", "--template", str(TEMPLATE), "-o", str(out)], cwd=ROOT, check=True
    )
    (out / RECORD).write_text(sources_digest() + "\n")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/web is stale")
    args = parser.parse_args()
    recorded = (OUT / RECORD).read_text().strip() if (OUT / RECORD).exists() else ""
    if args.check and not _plugin():
        if recorded != sources_digest():
            print("gen/web is older than protos/ (run `make proto`, which needs Node)")
            return 1
        print("gen/web matches protos/ (by its record: no Node here to regenerate)")
        return 0
    if not _plugin():
        print("make proto: gen/web needs Node and npm to regenerate", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        if args.check:
            if _files(fresh) != _files(OUT):
                print("gen/web differs from protos/ (run `make proto`)", file=sys.stderr)
                return 1
            print("gen/web matches protos/")
            return 0
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(fresh, OUT)
    print(f"generated {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
