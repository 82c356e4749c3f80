"""Evaluating paired checkpoints on a paired folder: PSNR, SSIM, LPIPS, CLIP image similarity, FID, KID.

Every checkpoint translates the same pairs (its own data settings: layout, direction, size; they must
agree); a "source" row scores the untranslated sources as a reference. FID/KID and CLIP similarity use
one chosen feature extractor for all rows (an open_clip tower, default: the first DiT checkpoint's
CLIP), recorded in the report. LPIPS needs its backbone weights locally; without them it is reported as
missing (null) rather than guessed. Results: ``eval.json`` and ``eval.md`` in the output folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dit_translate import metrics
from dit_translate.files import write_text_atomic
from dit_translate.methods.common import timed
from dit_translate.paired.data import PairedDataset
from dit_translate.paired.loading import PairedModels
from dit_translate.paired.sampling import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    translate_batch,
)

COLUMNS = [("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"), ("clip_similarity", "CLIP-sim ↑"),
           ("fid", "FID ↓"), ("kid", "KID ↓"), ("seconds_per_image", "s/img")]


def _data_key(models: PairedModels) -> tuple:
    d = models.spec.data
    return d.layout, d.a_dir, d.b_dir, d.direction, models.image_size


def evaluate(
    checkpoints: list[PairedModels],
    data: str | Path,
    *,
    split: str = "val",
    limit: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    features_name: str | None = None,
    lpips_model: torch.nn.Module | None = None,
    lpips_note: str = "",
) -> dict[str, Any]:
    """Score ``checkpoints`` on ``split`` of the paired folder ``data``; returns the report dict.

    ``features``: images in [-1, 1] -> unit-norm (B, D) embeddings for FID/KID and CLIP similarity
    (default: the first DiT checkpoint's CLIP tower). ``lpips_model``: a ``metrics.load_lpips`` model,
    or None with ``lpips_note`` saying why LPIPS is missing.
    """
    if not checkpoints:
        raise ValueError("give at least one checkpoint to evaluate")
    keys = {_data_key(m) for m in checkpoints}
    if len(keys) > 1:
        raise ValueError(f"the checkpoints disagree on the data settings (layout, folders, direction, size): {keys}")
    first = checkpoints[0]
    if features is None:
        dit = next((m for m in checkpoints if m.clip is not None), None)
        if dit is None:
            raise ValueError("no feature extractor for FID/KID: evaluate a DiT checkpoint too, or pass one")
        features, features_name = dit.clip.embed_image, dit.clip.name
        if dit.clip_untrained:
            features_name += " (UNTRAINED random CLIP: FID/KID/CLIP-sim are plumbing checks, not quality scores)"
    dataset = PairedDataset(data, first.spec.data, first.image_size, split, augment=False)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    items = [dataset[i] for i in range(n)]
    sources = torch.stack([it["source"] for it in items])
    targets = torch.stack([it["target"] for it in items])
    device = first.device

    def embed(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([features(images[i:i + batch_size].to(device)).float().cpu()
                              for i in range(0, len(images), batch_size)]).numpy()

    real = embed(targets)
    rows = [_score("source", "identity", sources, targets, real, embed, lpips_model, seconds=0.0)]
    for models in checkpoints:
        s = int(steps or models.defaults.get("steps", DEFAULT_STEPS))
        w = float(models.defaults.get("guidance", DEFAULT_GUIDANCE) if guidance is None else guidance)
        generator = torch.Generator().manual_seed(seed)
        with timed() as elapsed:
            outputs = torch.cat([translate_batch(models, sources[i:i + batch_size], steps=s, guidance=w,
                                                 generator=generator).cpu()
                                 for i in range(0, n, batch_size)])
            seconds = elapsed()
        name = models.folder.name if models.folder else models.name
        row = _score(name, models.kind, outputs, targets, real, embed, lpips_model, seconds / n)
        dit = models.kind == "dit"
        row.update(preset=models.name, steps=s if dit else None, guidance=w if dit else None, nfe=models.nfe(s, w),
                   trained_steps=models.step, untrained=models.untrained)
        rows.append(row)
    notes = [lpips_note] if lpips_note else []
    if n < 50:
        notes.append(f"only {n} pairs: FID is strongly biased at this size, prefer KID")
    return {"data": str(data), "split": split, "pairs": n, "features": features_name, "seed": seed,
            "rows": rows, "notes": notes}


def _score(name: str, kind: str, outputs: torch.Tensor, targets: torch.Tensor, real: np.ndarray,
           embed: Callable[[torch.Tensor], np.ndarray], lpips_model, seconds: float) -> dict[str, Any]:
    fake = embed(outputs)
    pairs = list(zip(outputs, targets))
    row = {
        "name": name,
        "kind": kind,
        "psnr": float(np.mean([metrics.psnr(o, t) for o, t in pairs])),
        "ssim": float(np.mean([metrics.ssim(o, t) for o, t in pairs])),
        "lpips": None if lpips_model is None else float(np.mean(
            [metrics.lpips_distance(o[None], t[None], lpips_model) for o, t in pairs])),
        "clip_similarity": float((real * fake).sum(-1).mean()),
        **metrics.fid_kid(real, fake),
        "seconds_per_image": seconds,
    }
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table (one row per checkpoint, plus the untranslated sources)."""
    head = ["model", "kind", *[label for _, label in COLUMNS]]
    lines = [f"Paired evaluation on {report['data']} ({report['split']} split, {report['pairs']} pairs); "
             f"FID/KID and CLIP similarity on {report['features']} features.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        cells = [row["name"], row["kind"], *[_cell(row[key]) for key, _ in COLUMNS]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``out`` (atomically) and return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "eval.json", out / "eval.md"
    write_text_atomic(paths[0], json.dumps(report, indent=2, allow_nan=False))
    write_text_atomic(paths[1], markdown(report))
    return paths
