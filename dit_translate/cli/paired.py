"""``python -m dit_translate {translate,train,eval}``: paired translation with a CLIP-conditioned DiT
(or the pix2pix baseline).

"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``translate``, ``train`` and ``eval`` commands to the CLI's subparsers."""
    p = subparsers.add_parser("translate", help="paired translation of one image with a DiT (or pix2pix) checkpoint")
    p.add_argument("--image", required=True, help="input image (PNG, JPEG, WebP, ...)")
    p.add_argument("--preset", default="tiny-dit", help="paired preset name or presets/X.toml (default: tiny-dit)")
    p.add_argument("--checkpoint", help="a checkpoint folder written by `train` (instead of the preset's)")
    p.add_argument("--steps", type=positive_int, help="DDIM steps (checkpoint default)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale; 1 = conditional only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=positive_int,
                   help="working size: the longer side in pixels, a multiple of the model's size factor "
                        "(default: the checkpoint's)")
    p.add_argument("--out", required=True, help="output image path")
    p.add_argument("--json", action="store_true", help="print one JSON object with timings and metrics")
    add_output_size(p)
    add_dtype(p)
    p.set_defaults(func=cmd_translate)

    p = subparsers.add_parser("train", help="train a paired DiT (or the pix2pix baseline) with accelerate")
    p.add_argument("--config", required=True, help="paired preset: presets/X.toml or a preset name")
    p.add_argument("--data", required=True, help="paired data folder (AB images, or two folders)")
    p.add_argument("--out", required=True, help="checkpoint folder (resumed when it holds a run)")
    p.add_argument("--max-steps", type=positive_int, help="stop at this step (the schedule keeps [train] steps)")
    p.add_argument("--model-kind", choices=("dit", "pix2pix"), help="override [train] model")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="PSNR/SSIM/LPIPS/CLIP-sim/FID/KID of checkpoints on a paired folder")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint folder; repeat to compare (e.g. the DiT and the pix2pix baseline)")
    p.add_argument("--data", required=True, help="paired data folder")
    p.add_argument("--split", default="val", choices=("train", "val", "all"))
    p.add_argument("--limit", type=positive_int, help="evaluate the first N pairs only")
    p.add_argument("--steps", type=positive_int, help="DDIM steps (checkpoint default)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (checkpoint default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", help="open_clip 'arch/tag' or 'local-dir:folder' for FID/KID and CLIP "
                                      "similarity (default: the first DiT checkpoint's CLIP)")
    p.add_argument("--lpips-net", default="alex", choices=("alex", "vgg"))
    p.add_argument("--lpips-backbone", default="", help="local torchvision backbone weights (default: torch hub cache)")
    p.add_argument("--out", help="report folder (default: <first checkpoint>/eval)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_dtype(p)
    p.set_defaults(func=cmd_eval)


def cmd_translate(args: argparse.Namespace) -> int:
    from dit_translate import api
    from dit_translate.images import check_destination

    check_destination(args.out)  # an unwritable format or a folder fails before the work, not after
    store = store_for(args)
    result = api.translate(args.image, preset=args.preset, checkpoint=args.checkpoint, steps=args.steps,
                           guidance=args.guidance, seed=args.seed, size=args.size, store=store,
                           progress=None if args.json else tqdm_progress())
    if result.extras["untrained"]:
        warn(f"checkpoint {result.extras['preset']!r} is an UNTRAINED random model (tiny world not trained yet)")
    elif result.extras["clip_untrained"]:
        warn("this checkpoint is conditioned on an UNTRAINED random CLIP")
    written = write_result(result, args)
    if args.json:
        print(json.dumps({**result.to_json(), **runs_on(store), "output_size": list(written),
                          "untrained": result.extras["untrained"]}))
    else:
        print(f"{result.method}: {result.seconds:.2f} s, {result.nfe} network evaluations, "
              f"SSIM to source {result.metrics['ssim_to_source']:.3f} -> {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dit_translate.paired.train import train
    from dit_translate.presets import load_preset

    preset = load_preset(args.config)
    result = train(preset, args.data, args.out, max_steps=args.max_steps, model_kind=args.model_kind)
    resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
    procs = f" on {result.processes} processes" if result.processes > 1 else ""
    if result.main_process:
        print(f"trained {preset.name} to step {result.step}{resumed}{procs}, {result.seconds:.1f} s of training "
              f"-> {result.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dit_translate.guidance import load_feature_clip
    from dit_translate.metrics import load_lpips
    from dit_translate.paired import evaluate
    from dit_translate.paired.loading import load_paired

    store = store_for(args)  # device and dtype only: eval holds several checkpoints at once
    checkpoints = [load_paired(path, store.device, store.dtype) for path in args.checkpoint]
    features = load_feature_clip(args.features, store.device) if args.features else None
    try:
        lpips_model, note = load_lpips(args.lpips_net, args.lpips_backbone).to(store.device), ""
    except FileNotFoundError as e:
        lpips_model, note = None, f"LPIPS not computed: {e}"
        warn(note)
    report = evaluate.evaluate(
        checkpoints, args.data, split=args.split, limit=args.limit, steps=args.steps, guidance=args.guidance,
        seed=args.seed, features=None if features is None else features.embed_image,
        features_name=None if features is None else features.name, lpips_model=lpips_model, lpips_note=note)
    out = Path(args.out) if args.out else Path(args.checkpoint[0]) / "eval"
    json_path, md_path = evaluate.write_report(report, out)
    if args.json:
        print(json.dumps(report))
    else:
        print(evaluate.markdown(report), end="")
        print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0

