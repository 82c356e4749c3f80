"""Command line: ``python -m dit_translate {presets,edit,bench} ...`` (the contract of DESIGN.md).

User errors (bad image, unknown preset, missing or corrupt weights, out-of-range knobs, not enough
memory, an output that cannot be written) exit with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from dit_translate.files import WriteError
from dit_translate.images import ImageError

USER_ERRORS = (ImageError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, WriteError)


def _quiet_libraries() -> None:
    """Keep stderr for our own messages: no library progress bars or info logs."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")


def _tqdm_progress():
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, desc: str) -> None:
        bar = bars.get(desc)
        if bar is None:
            bar = bars[desc] = tqdm(total=total, desc=desc, leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def cmd_presets(args: argparse.Namespace) -> int:
    from dit_translate.presets import list_presets
    from dit_translate.store import availability

    rows = [(p.name, p.kind, availability(p), p.description) for p in list_presets()]
    if args.json:
        print(json.dumps([{"name": n, "kind": k, "available": a.ok, "untrained": a.untrained,
                           "detail": a.detail, "description": d}
                          for n, k, a, d in rows]))
        return 0
    width = max(len(n) for n, *_ in rows)
    print(f"{'name':<{width}}  {'kind':<16}  {'weights':<9}  detail")
    for name, kind, avail, _ in rows:
        print(f"{name:<{width}}  {kind:<16}  {'yes' if avail.ok else 'no':<9}  {avail.detail}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from dit_translate import api
    from dit_translate.images import save_format, save_image, to_pil
    from dit_translate.store import default_store

    save_format(args.out)  # an unwritable format fails before the work, not after
    request = api.EditRequest(
        method=args.method,
        prompt=args.prompt,
        strength=args.strength,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        negative_prompt=args.negative_prompt,
        variant=args.variant,
        inversion_steps=args.inversion_steps,
    )
    store = default_store()
    result = api.edit(request, args.image, preset=args.preset, model=args.model, store=store,
                      progress=None if args.json else _tqdm_progress())
    if result.extras.get("untrained"):
        print(f"warning: preset {args.preset!r} runs on UNTRAINED random weights (tiny world not trained yet)", file=sys.stderr)
    save_image(to_pil(result.image), args.out)
    if args.json:
        print(json.dumps({**result.to_json(), "device": str(store.device)}))
    else:
        print(f"{result.method}: {result.seconds:.2f} s, {result.nfe} U-Net evaluations, "
              f"SSIM to source {result.metrics['ssim_to_source']:.3f} -> {args.out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: one line on stderr and exit status 2 (``--help`` shows usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m dit_translate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list presets and whether their weights are available")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("edit", help="SDEdit, semantic-discrepancy correction or PnP on one image")
    p.add_argument("--method", required=True, choices=("sdedit", "correct", "pnp"))
    p.add_argument("--image", required=True, help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("--prompt", required=True, help="target description, e.g. 'a comic drawing'")
    p.add_argument("--preset", default="tiny", help="preset name or presets/X.toml path (default: tiny)")
    p.add_argument("--model", help="override the preset's diffusion model: a local folder or a hub id")
    p.add_argument("--strength", type=float, help="SDEdit strength in (0, 1] (preset default)")
    p.add_argument("--steps", type=_positive_int, help="DDIM steps (preset default)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (preset default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative-prompt", help="negative prompt (method default)")
    p.add_argument("--variant", default="released", choices=("released", "trajectory"),
                   help="correction variant (--method correct)")
    p.add_argument("--inversion-steps", type=_positive_int, help="PnP inversion steps (preset default)")
    p.add_argument("--out", required=True, help="output image path")
    p.add_argument("--json", action="store_true", help="print one JSON object with timings and metrics")
    p.set_defaults(func=cmd_edit)
    from dit_translate.cli_guide import add_guide_parser
    add_guide_parser(sub)
    from dit_translate.cli_paired import add_paired_parsers
    add_paired_parsers(sub)

    p = sub.add_parser("bench", help="run the editing benchmark (JSON + markdown + PNG)")
    p.add_argument("--out", default="benchmarks/results", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny preset only (skip the SD-1.5-size U-Net)")
    p.set_defaults(func=cmd_bench)
    return parser


def cmd_bench(args: argparse.Namespace) -> int:
    from dit_translate.bench import run_editing_benchmark

    run_editing_benchmark(Path(args.out), quick=args.quick)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    from dit_translate.presets import PresetError
    from dit_translate.runtime import MemoryExhaustedError
    from dit_translate.store import MissingWeightsError

    try:
        return args.func(args)
    except (*USER_ERRORS, PresetError, MissingWeightsError, MemoryExhaustedError) as e:
        print("error:", *str(e).split(), file=sys.stderr)  # one line, whatever a library put in the message
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
