"""`python -m gen [--spec NAME] [--check]`: write or check the generated files."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from gen import ROOT, render
from hw import spec as hwspec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gen", description=__doc__)
    parser.add_argument("--spec", default=hwspec.DEFAULT, help="spec name or path")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 and name every stale generated file"
    )
    parser.add_argument("--out", default=str(ROOT), help="root to write into (default: the tree)")
    args = parser.parse_args(argv)
    try:
        spec = hwspec.load(args.spec)
    except hwspec.SpecError as e:
        print(f"gen: bad spec: {e}", file=sys.stderr)
        return 2
    stale = []
    for rel, text in render(spec).items():
        path = Path(args.out) / rel
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(rel)
            diff = difflib.unified_diff(
                (current or "").splitlines(), text.splitlines(), rel, "rendered", lineterm="", n=1
            )
            print("\n".join(list(diff)[:12]), file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {rel}")
    if stale:
        print(f"gen: stale: {' '.join(stale)}; run `python -m gen`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
