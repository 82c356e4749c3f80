"""``python -m dit_translate.tiny build|export|eval``: build the tiny world's models."""

from __future__ import annotations

import argparse

import torch

from dit_translate.tiny import build


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dit_translate.tiny")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="train every stage (resuming) and export the SD folder")
    p.add_argument("--out", default="assets/tiny/sd")
    p.add_argument("--work", default="/work/tiny-runs")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--vae-steps", type=int, default=5000)
    p.add_argument("--stages", default="vae", help="comma-separated subset of: vae")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = args.stages.split(",")
    if "vae" in stages:
        build.build_vae(args.work, args.vae_steps)


if __name__ == "__main__":
    main()
