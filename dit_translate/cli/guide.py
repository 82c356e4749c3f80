"""``python -m dit_translate guide``: asymmetric gradient guidance (AGG), text- or image-guided.

"""

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
from dit_translate.methods.variants import AGG, DEFAULT_AGG


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("guide", help="AGG: text- or image-guided translation, against unguided DDIM")
    p.add_argument("--image", required=True, help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("--text", help="target description for text guidance, e.g. 'a comic drawing'")
    p.add_argument("--source-text", help="description of the source (text guidance; sharpens the CLIP direction)")
    p.add_argument("--style-image", help="style image for image guidance (instead of --text)")
    p.add_argument("--preset", default="tiny", help="preset name or presets/X.toml path (default: tiny)")
    p.add_argument("--model", help="override the preset's diffusion model: a local folder or a hub id")
    p.add_argument("--steps", type=positive_int,
                   help="respaced DDIM grid; AGG skips its first 40%% (default: AGG's own grid, 100)")
    p.add_argument("--variant", default=DEFAULT_AGG, choices=tuple(AGG),
                   help="; ".join(f"{k}: {v}" for k, v in AGG.items()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=positive_int,
                   help="working size: the longer side in pixels, a multiple of the model's size factor "
                        "(default: the preset's; with --model, the model's own)")
    p.add_argument("--out", required=True, help="output image path (the AGG result)")
    p.add_argument("--json", action="store_true", help="print one JSON object with timings and metrics")
    add_output_size(p)
    add_dtype(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dit_translate import api
    from dit_translate.images import check_destination

    check_destination(args.out)  # an unwritable format or a folder fails before the work, not after
    request = api.GuideRequest(text=args.text, source_text=args.source_text, style_image=args.style_image,
                               steps=args.steps, seed=args.seed, variant=args.variant,
                               size=args.size)
    store = store_for(args)
    result = api.guide(request, args.image, preset=args.preset, model=args.model, store=store,
                       progress=None if args.json else tqdm_progress())
    if result.extras["untrained"]:
        warn(f"preset {args.preset!r} runs on UNTRAINED random weights (tiny world not trained yet)")
    if result.extras["untrained_guidance"]:
        warn(f"guidance models {', '.join(result.extras['untrained_guidance'])} are UNTRAINED random stand-ins")
    written = write_result(result, args)
    m, ddim = result.metrics, result.extras["ddim"]
    if args.json:
        print(json.dumps({**result.to_json(), **runs_on(store), "output_size": list(written),
                          "baseline": {k: v for k, v in ddim.to_json().items() if k in ("method", "seconds", "nfe")}}))
    else:
        print(f"agg: {result.seconds:.2f} s, {result.nfe} U-Net evaluations; guidance loss {m['guidance_loss_agg']:.3f} "
              f"(unguided DDIM {m['guidance_loss_ddim']:.3f}, {ddim.seconds:.2f} s, {ddim.nfe} evaluations); "
              f"SSIM to source {m['ssim_to_source']:.3f} -> {args.out}")
    return 0
