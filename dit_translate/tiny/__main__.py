"""``python -m dit_translate.tiny build|export``: train the tiny world's models and export them.

build   runs the stages in order (vae, decoder, sd, export, clip, dit, dino), each resuming from
        ``<work>/<stage>/checkpoint``: the Stable Diffusion folder goes to ``--out`` and the tiny
        open_clip folder to ``--clip-out``, then the paired DiT (``presets/tiny-dit.toml``, which
        reads those two) to ``--dit-out`` and the tiny DINO ViT to ``--dino-out``, each with its
        model card.
report  measures every held-out figure of the shipped tiny world and writes assets/tiny/README.md.
pairs   writes the tiny DiT's paired data: a pix2pix "AB" folder of photo | comic crops
        (``train/`` from the training photos, ``test/`` from the held-out ones).
photos  fetches the manifest's photos (``assets/tiny/data/photos.json``) from Debian packages with
        ``apt-get download``, verifies their sha256 and writes resized copies plus an index to ``--out``.
        ``colorize``: the pix2pix L -> ab colouriser (``presets/tiny-colorize.toml``) on the colour
        training photos (``--photos``: the extracted Debian photos' train split, plus scikit-image's),
        exported to ``--colorize-out`` with its model card.
export  exports the latest stage-2 checkpoint now (usable mid-training) with its model card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dit_translate.tiny import build
from dit_translate.tiny.train_clip import CLIPTrainConfig, export_clip, train_clip, training_data
from dit_translate.tiny.train_dino import DINOTrainConfig
from dit_translate.tiny.train_sd import SDTrainConfig
from dit_translate.tiny.train_vae import DECODER_FINETUNE, VAETrainConfig

STAGES = ("vae", "decoder", "sd", "export", "clip", "dit", "dino", "colorize")


def _export(work: str, out: str, raw: bool) -> None:
    from dit_translate.tiny.cards import write_model_card

    folder = build.export(work, out, ema=not raw)
    write_model_card(folder, work)
    print(f"exported {folder}")


def _clip(work: str, out: str, cfg: CLIPTrainConfig, raw: bool) -> None:
    from dit_translate.tiny.cards import write_clip_card

    train_clip(Path(work) / "clip", cfg, training_data(cfg))
    folder = export_clip(Path(work) / "clip", out, ema=not raw)
    write_clip_card(folder, Path(work) / "clip")
    print(f"exported {folder}")


def _dino(work: str, out: str, cfg: DINOTrainConfig) -> None:
    from dit_translate.tiny.dino_card import write_dino_card

    folder = build.build_dino(work, cfg, out)
    write_dino_card(folder, Path(work) / "dino")
    print(f"exported {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dit_translate.tiny")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "export"):
        p = sub.add_parser(name)
        p.add_argument("--out", default="assets/tiny/sd", help="exported Stable Diffusion folder")
        p.add_argument("--work", default="/work/tiny-runs", help="checkpoints and logs")
        p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
        p.add_argument("--raw", action="store_true", help="export raw instead of EMA weights")
    report = sub.add_parser("report")
    report.add_argument("--root", default="assets/tiny")
    pairs = sub.add_parser("pairs")
    pairs.add_argument("--out", default="/work/tiny-runs/pairs")
    pairs.add_argument("--crops-per-photo", type=int, default=384)
    photos = sub.add_parser("photos")
    photos.add_argument("--out", default="/work/tiny-runs/photos", help="folder for the extracted photos")
    b = sub.choices["build"]
    b.add_argument("--vae-steps", type=int, default=VAETrainConfig.steps)
    b.add_argument("--decoder-steps", type=int, default=VAETrainConfig.steps)
    b.add_argument("--unet-steps", type=int, default=SDTrainConfig.steps)
    b.add_argument("--unet-size", type=int, default=SDTrainConfig.size, help="training crop side (pixels)")
    b.add_argument("--unet-batch", type=int, default=SDTrainConfig.batch_size)
    b.add_argument("--unet-lr", type=float, default=SDTrainConfig.lr)
    b.add_argument("--unet-crops", type=int, default=SDTrainConfig.crops_per_photo, help="crops per photo")
    b.add_argument("--unet-init", default="", help="exported SD folder to start stage 2 from (e.g. assets/tiny/sd)")
    b.add_argument("--clip-steps", type=int, default=CLIPTrainConfig.steps)
    b.add_argument("--clip-out", default="assets/tiny/clip", help="exported open_clip folder")
    b.add_argument("--dit-steps", type=int, default=None, help="stop the DiT run early at this step")
    b.add_argument("--dit-out", default="assets/tiny/dit", help="exported DiT checkpoint folder")
    b.add_argument("--dino-steps", type=int, default=DINOTrainConfig.steps)
    b.add_argument("--dino-out", default="assets/tiny/dino", help="exported timm DINO ViT folder")
    b.add_argument("--colorize-steps", type=int, default=None, help="stop the colouriser run early at this step")
    b.add_argument("--colorize-out", default="assets/tiny/colorize-pix2pix", help="exported colouriser folder")
    b.add_argument("--photos", default="/work/tiny-runs/photos",
                   help="extracted Debian photos (`python -m dit_translate.tiny photos --out DIR`); '' = none")
    b.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "report":
        from dit_translate.tiny.cards import write_world_card

        print(f"wrote {write_world_card(args.root)}")
        return
    if args.command == "pairs":
        from dit_translate.tiny.data import write_pairs

        print(f"wrote {write_pairs(args.out, crops_per_photo=args.crops_per_photo)}")
        return
    if args.command == "photos":
        from dit_translate.tiny.photos import build as build_photos

        print(f"wrote {build_photos(args.out)}")
        return
    if args.command == "export":
        try:
            _export(args.work, args.out, args.raw)
        except FileNotFoundError as err:
            sys.exit(f"error: {err}")
        return
    stages = args.stages.split(",")
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown stages {sorted(unknown)}")
    if "vae" in stages:
        build.build_vae(args.work, VAETrainConfig(steps=args.vae_steps))
    if "decoder" in stages:
        build.build_decoder(args.work, VAETrainConfig(steps=args.decoder_steps, **DECODER_FINETUNE))
    if "sd" in stages:
        build.build_sd(args.work, SDTrainConfig(
            steps=args.unet_steps, size=args.unet_size, batch_size=args.unet_batch, lr=args.unet_lr,
            crops_per_photo=args.unet_crops, init=str(Path(args.unet_init).resolve()) if args.unet_init else "",
            unet={**SDTrainConfig().unet, "sample_size": args.unet_size // 4}), args.photos or None)
    if "export" in stages:
        _export(args.work, args.out, args.raw)
    if "clip" in stages:
        _clip(args.work, args.clip_out, CLIPTrainConfig(steps=args.clip_steps), args.raw)
    if "dit" in stages:
        from dit_translate.tiny.cards import write_dit_card

        folder = build.export_dit(build.build_dit(args.work, max_steps=args.dit_steps), args.dit_out)
        write_dit_card(folder, Path(args.work) / "dit", sd=args.out)
        print(f"exported {folder}")
    if "dino" in stages:
        _dino(args.work, args.dino_out, DINOTrainConfig(steps=args.dino_steps))
    if "colorize" in stages:
        from dit_translate.tiny import colorize

        run = colorize.build_colorize(args.work, args.photos or None, max_steps=args.colorize_steps)
        folder = colorize.export_colorize(run, args.colorize_out)
        colorize.write_card(folder, run)
        print(f"exported {folder}")


if __name__ == "__main__":
    main()
