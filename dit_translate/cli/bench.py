"""``python -m dit_translate bench``: runs the editing benchmark script (``benchmarks/editing.py``) of a
source checkout; the benchmarks are not part of the installed package."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "editing.py"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="run the editing benchmark (JSON + markdown + PNG)")
    p.add_argument("--out", default="benchmarks/results", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny preset only (skip the SD-1.5-size U-Net)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not SCRIPT.is_file():
        raise FileNotFoundError(f"the benchmarks live in a source checkout ({SCRIPT} is missing): clone the "
                                "repository to run them")
    command = [sys.executable, str(SCRIPT), "--out", args.out, *(["--quick"] if args.quick else [])]
    return subprocess.run(command, check=False).returncode
