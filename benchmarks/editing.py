"""Editing benchmark: SDEdit vs. semantic-discrepancy correction vs. PnP (seconds, NFE, peak memory).

    python benchmarks/editing.py [--out benchmarks/results] [--quick] [--repeats N]

Writes editing.json, editing.md and editing.png into --out (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dit_translate.bench import run_editing_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny preset only (skip the SD-1.5-size U-Net)")
    parser.add_argument("--repeats", type=int, help="timed runs per method (default: 3 on tiny, 1 on SD-size)")
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    report = run_editing_benchmark(args.out, quick=args.quick, repeats=args.repeats)
    print((args.out / "editing.md").read_text(), end="")
    print(f"wrote {args.out}/editing.{{json,md,png}} ({len(report['settings'])} setting(s))", file=sys.stderr)


if __name__ == "__main__":
    main()
