"""The tiny colouriser's held-out scores, comparison sheet and model card.

Held-out photos: scikit-image's chelsea and coffee and the manifest's "test" photos (when extracted),
colour ones only; none of them is ever in the colouriser's training folder (``tiny/colorize.py``).
Each is desaturated, colourised by ``api.colorize`` at the preset's working size (its L kept at full
size), and scored against its own colours, next to the grey photo's own numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dit_translate.colour import is_grey, to_grey
from dit_translate.tiny.data import load_extra_photos, load_photos
from dit_translate.tiny.eval import _csv_tail, plot_curves, read_curve

DEFAULT_PHOTOS = Path("/work/tiny-runs/photos")
KEYS = ("ciede2000", "grey_ciede2000", "colourfulness", "truth_colourfulness", "ab_psnr", "grey_ab_psnr")


def heldout_photos(extra: str | Path | None = DEFAULT_PHOTOS) -> dict[str, np.ndarray]:
    """name -> uint8 colour photo of the held-out split (chelsea, coffee, the manifest's test photos)."""
    photos = dict(load_photos("test"))
    if extra is not None and (Path(extra) / "photos.json").is_file():
        photos.update({k: v for k, (v, _c) in load_extra_photos(extra, "test").items()})
    return {k: v for k, v in photos.items() if not is_grey(v)}


def heldout_scores(folder: str | Path, extra: str | Path | None = DEFAULT_PHOTOS, colorfulness: float = 1.0,
                   size: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """({"photos": {name: metrics}, "mean": {...}, "seconds_per_image": s}, {name: colourised uint8})."""
    from dit_translate import api
    from dit_translate.store import ModelStore

    store = ModelStore("cpu")
    rows, outputs, seconds = {}, {}, []
    for name, photo in heldout_photos(extra).items():
        r = api.colorize(Image.fromarray(photo), checkpoint=str(folder), colorfulness=colorfulness, size=size,
                         store=store)
        rows[name] = {k: round(float(v), 4) for k, v in r.metrics.items()}
        seconds.append(r.seconds)
        outputs[name] = ((r.image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    mean = {k: round(float(np.mean([r[k] for r in rows.values()])), 4) for k in KEYS}
    mean["luma_error_max"] = float(max(r["luma_error"] for r in rows.values()))
    return ({"photos": rows, "mean": mean, "n": len(rows), "seconds_per_image": round(float(np.mean(seconds)), 4)},
            outputs)


def comparison_sheet(names: list[str], photos: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                     scores: dict, height: int = 160) -> Image.Image:
    """Rows of grey | colourised | truth (each scaled to ``height``), labelled with CIEDE2000."""
    rows = []
    for name in names:
        truth = photos[name]
        grey = (to_grey(truth) * 255).round().astype(np.uint8)
        tiles = [Image.fromarray(x) for x in (grey, outputs[name], truth)]
        w = round(truth.shape[1] * height / truth.shape[0])
        row = Image.new("RGB", (3 * w + 20, height + 16), "white")
        for i, t in enumerate(tiles):
            row.paste(t.resize((w, height), Image.Resampling.LANCZOS), (i * (w + 10), 16))
        s = scores["photos"][name]
        ImageDraw.Draw(row).text((2, 2), f"{name}: grey | pix2pix | truth   CIEDE2000 {s['grey_ciede2000']:.1f} -> "
                                          f"{s['ciede2000']:.1f}", fill="black")
        rows.append(row)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    return sheet


def write_colorize_card(folder: str | Path, run: str | Path, extra: str | Path | None = DEFAULT_PHOTOS) -> Path:
    """Write ``eval.json``, ``comparison.png``, ``loss_curve.png`` and ``README.md`` into ``folder``."""
    folder, run = Path(folder), Path(run)
    scores, outputs = heldout_scores(folder, extra)
    photos = heldout_photos(extra)
    shown = [n for n in ("chelsea", "coffee") if n in outputs] + sorted(n for n in outputs
                                                                        if n not in ("chelsea", "coffee"))[:6]
    comparison_sheet(shown, photos, outputs, scores).save(folder / "comparison.png")
    last = _csv_tail(run / "loss.csv")
    plot_curves({"L1 (ab / 110)": read_curve(run / "loss.csv", "l1"),
                 "critic loss": read_curve(run / "loss.csv", "loss_d")}, folder / "loss_curve.png")
    meta = json.loads((folder / "paired.json").read_text())
    spec, train = meta["spec"], meta["spec"]["train"]
    (folder / "eval.json").write_text(json.dumps({**scores, "step": meta["step"], "last": last}, indent=2))
    m = scores["mean"]
    n_train = len(json.loads((run.parent / "colorize-photos" / "photos.json").read_text())["photos"]) \
        if (run.parent / "colorize-photos" / "photos.json").is_file() else "?"
    wins = sum(r["ciede2000"] < r["grey_ciede2000"] for r in scores["photos"].values())
    if m["ciede2000"] < m["grey_ciede2000"]:
        verdict = (f"**Bar met**: closer to the true colours than the grey photo on average (CIEDE2000), and on "
                   f"{wins} of {scores['n']} photos.")
    else:
        verdict = (f"**Bar not met**: it adds colour, but on average it is *farther* from the true colours than "
                   f"the grey photo (CIEDE2000); it is closer on {wins} of {scores['n']} photos. Its chroma is "
                   "speckled where texture is strong (the GAN term) and wrong where brightness does not tell the "
                   "colour (the coffee cup comes out blue-grey, not red).")
    card = f"""---
license: cc0-1.0
tags: [pix2pix, colorization, image-to-image, toy, tiny]
---
# dit-translate tiny pix2pix colouriser (CIELAB L -> ab, toy world)

The GAN baseline of issue 18: pix2pix (`dit_translate.paired.pix2pix.UNetGenerator`, {meta["spec"]["pix2pix"]["ngf"]}
base channels, 1 channel in, 2 out) trained from scratch on CPU by `python -m dit_translate.tiny build --stages
colorize` (that is, `python -m dit_translate train --config presets/tiny-colorize.toml` on a folder of colour
photos, data layout `colorization`). Scaling as in the pix2pix repository's colourisation model: input
`L / 50 - 1`, output `ab / 110`; the PatchGAN critic ({spec["pix2pix"]["n_layers_d"]} layers) sees (L, ab);
loss GAN + {spec["pix2pix"]["l1_weight"]:g} x L1, Adam {spec["pix2pix"]["lr"]:g} / beta1 {spec["pix2pix"]["beta1"]},
{train["lr_schedule"]} decay over {train["steps"]} steps, batch {train["batch_size"]}.

## Data
{n_train} colour training photos: scikit-image's training photos (grey ones left out) and the extracted
Debian-package photos of the manifest's train split (`assets/tiny/data/photos.json`), each squashed to
{spec["data"]["load_size"]} x {spec["data"]["load_size"]}, randomly cropped to {meta["image_size"]} px and mirrored.
Never trained on: chelsea, coffee and the manifest's "test" photos.

## Training
{meta["step"]} steps in {float(last.get("seconds", "nan")):.0f} s of optimizer time on one (shared) CPU thread;
last L1 on ab/110 {float(last.get("l1", "nan")):.4f}. Curve: `loss_curve.png`.

## Held-out photos ({scores["n"]}; the result keeps each photo's L exactly, at full size)
| | CIEDE2000 to the true colours (lower is better) | colourfulness (truth {m["truth_colourfulness"]:.1f}) | ab-PSNR dB |
|---|---|---|---|
| grey photo (the baseline) | {m["grey_ciede2000"]:.2f} | 0.0 | {m["grey_ab_psnr"]:.2f} |
| this colouriser | {m["ciede2000"]:.2f} | {m["colourfulness"]:.1f} | {m["ab_psnr"]:.2f} |

{verdict}

Max |L_out - L_in| over the held-out photos: {m["luma_error_max"]:.1e} (float; an 8-bit PNG adds up to 0.3).
{scores["seconds_per_image"]:.2f} s per image on the CPU, 1 network evaluation, working size
{meta["defaults"].get("size")} px (longer side). Per-photo numbers: `eval.json`; grey | colourised | truth:
`comparison.png`. Grey-SSIM and L-PSNR are perfect by construction after the L swap and are not reported.

## What it can and cannot do
A toy: it learns the common colour priors of its photos (sky, foliage, skin and wood tones, the mean
chroma of a scene); it does not know objects, so it colours by local texture and brightness, and its
colours are muted where the photos disagree (the L1 term pulls towards the median). It exists so that
colourisation runs offline on trained weights through the same code as real checkpoints.
"""
    (folder / "README.md").write_text(card)
    return folder
