"""Generate the Python code for every proto under protos/, or check it.

The generated code is committed under gen/python so that an installed suite
needs no protoc; `--check` regenerates into a scratch folder and fails on any
difference, which keeps the committed code from drifting from the protos.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "gen" / "python"
# The mypy-protobuf plugins live beside the interpreter running this script.
BIN = Path(sys.executable).parent


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in {p.parent for p in out.rglob("*.py")}:
        while package != out:
            (package / "__init__.py").touch()
            package = package.parent
    (out / "eap" / "py.typed").touch()


def differences(left: Path, right: Path) -> list[str]:
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    names |= {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    return sorted(
        str(n)
        for n in names
        if not ((left / n).is_file() and (right / n).is_file())
        or not filecmp.cmp(left / n, right / n, shallow=False)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if gen/python is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        if args.check:
            stale = differences(fresh, OUT)
            if stale:
                print("generated code differs from protos/ (run `make proto`):", file=sys.stderr)
                for name in stale:
                    print(f"  gen/python/{name}", file=sys.stderr)
                return 1
            print("generated code matches protos/")
            return 0
        shutil.rmtree(OUT / "eap", ignore_errors=True)
        shutil.copytree(fresh, OUT, dirs_exist_ok=True)
    print(f"generated {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
