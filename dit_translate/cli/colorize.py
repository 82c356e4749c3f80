"""``python -m dit_translate colorize``: colourise a photo, keeping its luminance exactly, at its full size.

"""

from __future__ import annotations

import argparse
import json

from dit_translate.cli.common import add_dtype, positive_int, runs_on, store_for, warn


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("colorize", help="colourise a grey (or desaturated colour) photo; L kept exactly")
    p.add_argument("--image", required=True, help="input image; a colour photo is desaturated first and scored "
                                                  "against its own colours")
    p.add_argument("--method", default="pix2pix", choices=("pix2pix", "controlnet", "desaturation"),
                   help="colouriser (default: pix2pix; controlnet and desaturation are not built yet)")
    p.add_argument("--preset", default="tiny-colorize", help="colouriser preset (default: tiny-colorize)")
    p.add_argument("--checkpoint", help="a colouriser checkpoint folder written by `train` (instead of the preset's)")
    p.add_argument("--colorfulness", type=float, default=1.0, help="scale of the predicted chroma (0 = grey, 1 = "
                                                                   "the model's colours; up to 4)")
    p.add_argument("--size", type=positive_int, help="working size the model reads L at (longer side; preset default)")
    p.add_argument("--space", default="lab", choices=("lab", "yuv"),
                   help="recombination: CIELAB L swap (default) or BT.601 Y swap (the ldm demos')")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling methods (pix2pix is deterministic)")
    p.add_argument("--out", required=True, help="output image path (the input's size)")
    p.add_argument("--json", action="store_true", help="print one JSON object with timings and metrics")
    add_dtype(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dit_translate import api
    from dit_translate.images import check_destination, save_image, to_pil

    check_destination(args.out)  # an unwritable format or a folder fails before the work, not after
    store = store_for(args)
    result = api.colorize(args.image, method=args.method, preset=args.preset, checkpoint=args.checkpoint,
                          colorfulness=args.colorfulness, size=args.size, space=args.space, seed=args.seed,
                          store=store)
    if result.extras["untrained"]:
        warn(f"colouriser {result.extras['preset']!r} is an UNTRAINED random model")
    save_image(to_pil(result.image), args.out)
    m = result.metrics
    if args.json:
        print(json.dumps({**result.to_json(), **runs_on(store), "untrained": result.extras["untrained"],
                          "input_was_colour": result.extras["input_was_colour"],
                          "working_size": result.extras["working_size"], "colorfulness": args.colorfulness,
                          "space": args.space}))
    else:
        w, h = result.image.shape[-1], result.image.shape[-2]
        scored = (f"; CIEDE2000 to the true colours {m['ciede2000']:.2f} (grey photo {m['grey_ciede2000']:.2f})"
                  if "ciede2000" in m else "")
        print(f"{result.method}: {result.seconds:.2f} s, {result.nfe} network evaluation, {w}x{h}, "
              f"colourfulness {m['colourfulness']:.1f}{scored} -> {args.out}")
    return 0
