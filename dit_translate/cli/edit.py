"""``python -m dit_translate edit``: SDEdit, the semantic-discrepancy correction or PnP on one image."""

from __future__ import annotations

import argparse
import json

from dit_translate.cli.common import (
    add_dtype,
    add_output_size,
    positive_int,
    runs_on,
    store_for,
    tqdm_progress,
    warn,
    write_result,
)
from dit_translate.methods.variants import CORRECTION, DEFAULT_CORRECTION


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("edit", help="SDEdit, semantic-discrepancy correction or PnP on one image")
    p.add_argument("--method", required=True, choices=("sdedit", "correct", "pnp"))
    p.add_argument("--image", required=True, help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("--prompt", required=True, help="target description, e.g. 'a comic drawing'")
    p.add_argument("--preset", default="tiny", help="preset name or presets/X.toml path (default: tiny)")
    p.add_argument("--model", help="override the preset's diffusion model: a local folder or a hub id")
    p.add_argument("--strength", type=float, help="SDEdit strength in (0, 1] (preset default)")
    p.add_argument("--steps", type=positive_int, help="DDIM steps (preset default)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (preset default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative-prompt", help="negative prompt (method default)")
    p.add_argument("--variant", default=DEFAULT_CORRECTION, choices=tuple(CORRECTION),
                   help="correction variant (--method correct): "
                        + "; ".join(f"{k}: {v}" for k, v in CORRECTION.items()))
    p.add_argument("--inversion-steps", type=positive_int,
                   help="PnP inversion grid; must hold every sampling timestep "
                        "(preset default, else the sampling grid)")
    p.add_argument("--inversion-prompt", default="", help="PnP: prompt for the inversion only (default empty)")
    p.add_argument("--size", type=positive_int,
                   help="working size: the longer side in pixels, a multiple of the model's size factor "
                        "(default: the preset's; with --model, the model's own)")
    p.add_argument("--out", required=True, help="output image path")
    p.add_argument("--json", action="store_true", help="print one JSON object with timings and metrics")
    add_output_size(p)
    add_dtype(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dit_translate import api
    from dit_translate.images import check_destination

    check_destination(args.out)  # an unwritable format or a folder fails before the work, not after
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
        inversion_prompt=args.inversion_prompt,
        size=args.size,
    )
    store = store_for(args)
    result = api.edit(request, args.image, preset=args.preset, model=args.model, store=store,
                      progress=None if args.json else tqdm_progress())
    if result.extras.get("untrained"):
        warn(f"preset {args.preset!r} runs on UNTRAINED random weights (tiny world not trained yet)")
    written = write_result(result, args)
    if args.json:
        print(json.dumps({**result.to_json(), **runs_on(store), "output_size": list(written)}))
    else:
        print(f"{result.method}: {result.seconds:.2f} s, {result.nfe} U-Net evaluations, "
              f"SSIM to source {result.metrics['ssim_to_source']:.3f} -> {args.out}")
    return 0
