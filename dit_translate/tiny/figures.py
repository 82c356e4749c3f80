"""The tiny world's figures: loss curves, sample grids of the SD folder, and the examples image of the README."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from dit_translate.tiny.data import (
    STYLES,
    caption,
    to_tensor,
)
from dit_translate.tiny.measure import example_inputs

_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


@torch.no_grad()


def read_curve(path: str | Path, column: str = "loss") -> tuple[list[int], list[float]]:
    """(steps, values) of one column of a training ``loss.csv``."""
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]


def plot_curves(curves: dict[str, tuple[list[int], list[float]]], out: str | Path,
                size: tuple[int, int] = (640, 360)) -> Path:
    """Draw named loss curves (log-scale y, each normalised to its own x range) into a PNG."""
    w, h = size
    left, right, top, bottom = 60, 20, 20, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    values = [v for _, ys in curves.values() for v in ys if v > 0]
    lo, hi = math.log10(min(values)), math.log10(max(values))
    hi = hi if hi > lo else lo + 1
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            y = h - bottom - (k + math.log10(m) - lo) / (hi - lo) * (h - top - bottom)
            if top <= y <= h - bottom:
                draw.line([left - 4, y, left, y], fill="black")
                draw.text((4, y - 6), f"{m * 10.0**k:.3g}", fill="black")
    draw.text((left, h - bottom + 8), "training progress (each curve: step 0 .. its last step)", fill="black")
    for i, (name, (steps, ys)) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        last = max(steps[-1], 1)
        pts = [(left + s / last * (w - left - right), h - bottom - (math.log10(v) - lo) / (hi - lo) * (h - top - bottom))
               for s, v in zip(steps, ys) if v > 0]
        draw.line(pts, fill=color, width=2)
        draw.text((w - right - 200, top + 8 + 14 * i), f"{name} (last step {steps[-1]})", fill=color)
    img.save(out)
    return Path(out)


def sample_grid(folder: str | Path, out: str | Path, strength: float = 0.6, steps: int = 20,
                guidance: float = 5.0, seed: int = 0) -> Path:
    """PNG grid: per held-out photo, the input, its VAE reconstruction and SD img2img (SDEdit)
    results for each non-photo style prompt; each tile is the model's native size, upscaled x3."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = []
    for content, img in example_inputs(size).items():
        x = to_tensor(img)[None]
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample[0]
        tiles = [img, ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()]
        for style in STYLES[1:]:
            result = pipe(caption(style, content), image=Image.fromarray(img), strength=strength,
                          num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(seed)).images[0]
            tiles.append(np.asarray(result))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(out)
    return Path(out)


def tile_grid(rows: list[list[torch.Tensor]], scale: int = 3) -> Image.Image:
    """Rows of (3,H,W) images in [-1,1] -> one PIL grid, upscaled ``scale`` x (nearest)."""
    grid = torch.cat([torch.cat(row, dim=-1) for row in rows], dim=-2)
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)


EXAMPLE_COLUMNS = ("photo", "DiT (tiny-dit)", "SDEdit", "correction", "AGG")


def example_grid(examples: str | Path, out: str | Path, prompt: str = "a comic drawing", seed: int = 0,
                 store=None, tile: int = 192) -> Path:
    """What the app gives for its example photos (``examples/*.jpg``) with the default presets and knobs:
    one row per photo, columns ``EXAMPLE_COLUMNS`` (``prompt`` for the text-driven methods), each tile
    ``tile`` px wide with a caption row on top. Saved as a PNG at ``out``."""
    from dit_translate import images
    from dit_translate.api import EditRequest, GuideRequest, edit, guide, translate
    from dit_translate.store import default_store

    store = store or default_store()
    rows = []
    for path in sorted(Path(examples).glob("*.jpg")):
        photo = images.load_image(path)
        results = [translate(photo, store=store, seed=seed),
                   edit(EditRequest("sdedit", prompt, seed=seed), photo, store=store),
                   edit(EditRequest("correct", prompt, seed=seed), photo, store=store),
                   guide(GuideRequest(text=prompt, seed=seed), photo, store=store)]
        rows.append([photo] + [images.to_pil(r.image[0]) for r in results])
    height = round(tile * rows[0][0].height / rows[0][0].width)
    head = 20
    grid = Image.new("RGB", (tile * len(EXAMPLE_COLUMNS), head + height * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(EXAMPLE_COLUMNS):
        draw.text((j * tile + 4, 4), name, fill="black")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid.paste(img.resize((tile, height), Image.LANCZOS), (j * tile, head + i * height))
    grid.save(out)
    return Path(out)
