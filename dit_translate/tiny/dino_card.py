"""The tiny DINO's model card: its measurements (``dino_eval``) against the untrained ViTs, as Markdown,
JSON, a loss curve and the image-guided AGG examples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from dit_translate.tiny.cards import csv_tail
from dit_translate.tiny.data import HELD_OUT, PHOTOS
from dit_translate.tiny.dino_eval import RETRIEVAL_CROPS, measure
from dit_translate.tiny.figures import plot_curves, read_curve, tile_grid


def _mean_column(path: Path, column: str) -> float:
    """Mean of one column of a training ``loss.csv``."""
    return float(np.mean(read_curve(path, column)[1]))


def write_dino_card(folder: str | Path, work: str | Path) -> Path:
    """Measure the exported tiny DINO ``folder`` (``dino_eval.measure``) against the untrained ViTs and write
    its ``README.md``, ``eval.json``, ``loss_curve.png`` and ``agg_examples.png``."""
    folder, work = Path(folder), Path(work)
    results, grid = measure(folder)
    config = json.loads((folder / "config.json").read_text())
    cfg, extra = json.loads((work / "train_config.json").read_text()), config["dit_translate"]
    arch = cfg["model"]
    last = csv_tail(work / "loss.csv")
    sps = _mean_column(work / "loss.csv", "samples_per_s")
    (folder / "eval.json").write_text(json.dumps({**results, "last": last, "mean_samples_per_s": sps, **extra}, indent=2))
    plot_curves({"DINO loss": read_curve(work / "loss.csv"),
                 "teacher entropy": read_curve(work / "loss.csv", "teacher_entropy")}, folder / "loss_curve.png")
    tile_grid(grid).save(folder / "agg_examples.png")
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(folder / "model.safetensors").values())
    retrieval_rows = "\n".join(
        f"| {name} | {r['plain']['held_out']:.1%} | {r['plain']['train']:.1%} | {r['jittered']['held_out']:.1%} | "
        f"{r['jittered']['train']:.1%} |" for name, r in results["retrieval_top1"].items())
    structure_rows = "\n".join(f"| {name} | {r['same']:.3f} | {r['other']:.3f} | {r['contrast']:.3f} | {r['distance']:.4f} |"
                               for name, r in results["key_structure"].items())
    agg_rows = "\n".join(
        f"| {photo} | {name} | {r['dino_cls_to_style']:.3f} | {r['clip_to_style']:.3f} | {r['structure_distance']:.4f} | "
        f"{r['ssim_to_source']:.3f} |" for photo, rows in results["agg_image_guided"].items() for name, r in rows.items())
    names = list(next(iter(results["agg_image_guided"].values())))
    card = f"""---
license: cc0-1.0
library_name: timm
tags: [dino, vit, self-supervised, toy, tiny]
---
# dit-translate tiny DINO ViT (toy world)

A timm `VisionTransformer` (`vit_tiny_patch16_224` resized: {arch["img_size"]} px, patch {arch["patch_size"]},
width {arch["embed_dim"]}, {arch["depth"]} blocks, {arch["num_heads"]} heads; {params / 1e6:.2f} M params, backbone
only) trained from scratch on CPU by self-distillation (DINO, Caron et al. 2021) with
`python -m dit_translate.tiny build --stages dino`, in timm's `local-dir` layout. It is the DINO of the
tiny world: image-guided AGG (`guide --style-image`) compares its [CLS] token (after the final norm,
`encoders.DinoEncoder.cls_token`) of the result with the style image's.

## Data and recipe
Views of the {len(PHOTOS) - len(HELD_OUT)} training photos (short side resized to {cfg["photo_side"]} px; never
{", ".join(HELD_OUT)}) and of {cfg["synthetic"]} dead-leaves images ({cfg["synthetic_size"]} px, `tiny.data.dead_leaves`;
a sample is one of those with probability {cfg["synthetic_p"]}). Multi-crop: 2 global views ({cfg["global_size"]} px,
area {cfg["global_scale"][0]}-{cfg["global_scale"][1]}) and {cfg["local_crops"]} local views ({cfg["local_size"]} px, area
{cfg["local_scale"][0]}-{cfg["local_scale"][1]}), with DINO's flips, colour jitter, greyscale, blur and solarisation
(`tiny.multicrop`). Student and teacher: the ViT plus DINO's head (MLP {cfg["hidden_dim"]}-{cfg["hidden_dim"]}-{cfg["bottleneck_dim"]},
l2-normalised, weight-normalised last layer to {cfg["out_dim"]} prototypes). Loss: cross-entropy of the teacher's
centred (centre momentum {cfg["center_momentum"]}) and sharpened softmax (temperature {cfg["teacher_temp_start"]} ->
{cfg["teacher_temp"]} over the first {cfg["teacher_temp_warmup"]:.0%} of the steps) against the student's (temperature
{cfg["student_temp"]}), over every pair of a teacher global view and another student view. Teacher: EMA of the
student, momentum {cfg["momentum"]} -> 1 (cosine). AdamW lr {cfg["lr"]} ({cfg["warmup"]} warm-up steps, linear decay
to 10% over the second half), weight decay {cfg["weight_decay"]}, batch {cfg["batch_size"]}; {last.get("step", "?")} steps in
{float(last.get("seconds", "nan")):.0f} s of optimizer time on one CPU thread ({sps:.1f} samples/s). Shipped: the
teacher's backbone at step {extra["training_step"]} (no head).

![loss curve](loss_curve.png)

Last logged (mean of the last {cfg["log_every"]} steps): loss {last.get("loss", "?")}, teacher entropy
{last.get("teacher_entropy", "?")} nats, entropy of the batch-mean teacher distribution {last.get("batch_entropy", "?")}
nats (log {cfg["out_dim"]} = {math.log(cfg["out_dim"]):.2f}; both near 0 or both near log K would mean collapse).

## Evaluation
Untrained baselines: the preset's random fallback (`encoders.TINY_DINO_ARGS`, what image-guided AGG on the
tiny preset used before this model shipped) and a random init of this architecture.

**Crop retrieval.** {len(PHOTOS)} photos x {RETRIEVAL_CROPS} new random crops (30-100% of the short side, flips; 64 px): is the
nearest other crop (cosine of the [CLS] feature) a crop of the same photo? Top-1 over the held-out photos' crops
and over the training photos' crops; "jittered": every crop first gets DINO's colour jitter and greyscale. The
trivial baselines are centred mean colour and a centred 4x4 thumbnail.

| features | held-out, plain | training, plain | held-out, jittered | training, jittered |
|---|---|---|---|---|
{retrieval_rows}

**Key self-similarity structure** (held-out crops): the cosine self-similarity matrix of the last block's keys
(patch tokens), correlated with the matrix of a mildly altered copy (weak colour jitter, slight blur, noise;
`same`) and with another crop's (`other`); `contrast` = same - other; `distance`: AGG's structure distance (MSE
of the matrices) to the altered copy. "patch pixels": the same on raw 8x8 patches.

| descriptor | same | other | contrast | distance |
|---|---|---|---|---|
{structure_rows}

**Image-guided AGG, held-out.** `api.guide` with the style image ({results["style_image"]}) on
`assets/examples/{{{",".join(HELD_OUT)}}}.jpg`, {results["agg_steps"]} steps, seeds {results["agg_seeds"]}, the tiny preset with its DINO
swapped; the DDIM row is the unguided baseline of the same seeds. Judges: cosine to the style image of this
model's [CLS] and of the tiny CLIP's image embedding (higher = closer to the style), this model's key structure
distance to the source and SSIM to the source (lower distance / higher SSIM = structure kept).

| photo | run | DINO [CLS] cos to style | CLIP cos to style | structure distance | SSIM to source |
|---|---|---|---|---|---|
{agg_rows}

Columns: source, style image, DDIM, then AGG with {", ".join(names[1:])} (seed {results["agg_seeds"][0]}).

![AGG examples](agg_examples.png)

## Limits
{len(PHOTOS) - len(HELD_OUT)} photos and synthetic shapes, 64 px, a few thousand steps: its features tell apart the textures and
colour layouts of this small world, not objects; it is no substitute for DINO ViT-B/8 when judging real images.
"""
    (folder / "README.md").write_text(card)
    return folder / "README.md"
