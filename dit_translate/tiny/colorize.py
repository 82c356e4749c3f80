"""The tiny world's pix2pix colouriser (issue 18): its training photos, its run and its export.

``write_photos(out, extra)`` writes the colour photos of the TRAINING split only into ``out/train/``: the
scikit-image training photos (``data.load_photos("train")``) and the extracted Debian-package photos of
the manifest's train split (``data.load_extra_photos``); grey photos (mean CIELAB chroma < 2: camera,
coins, text, ...) are left out, since a colouriser learns grey from them. The held-out photos (chelsea,
coffee and the manifest's "test" photos) are never written. ``build_colorize`` trains
``presets/tiny-colorize.toml`` on that folder with ``python -m dit_translate train``'s code (resumable);
``export_colorize`` copies the loadable checkpoint to ``assets/tiny/colorize-pix2pix``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from dit_translate.colour import is_grey
from dit_translate.files import replaced_folder
from dit_translate.tiny.data import load_extra_photos, load_photos

PRESET = "tiny-colorize"
LONG_SIDE = 192
"""Photos are stored with this longer side: the preset squashes each to 96 x 96 before its 64 px crop, and
smaller files make the one-thread data loading about twice as fast."""


def training_photos(extra: str | Path | None) -> dict[str, np.ndarray]:
    """name -> uint8 H x W x 3 colour photo of the training split (grey photos left out)."""
    photos = dict(load_photos("train"))
    if extra is not None:
        photos.update({f"extra-{k}": v for k, (v, _caption) in load_extra_photos(extra, "train").items()})
    return {k: v for k, v in photos.items() if not is_grey(v)}


def write_photos(out: str | Path, extra: str | Path | None) -> Path:
    """Write the training photos (longer side ``LONG_SIDE``) to ``out/train/NAME.png`` and an index
    ``out/photos.json``; returns ``out``."""
    out = Path(out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    photos = training_photos(extra)
    for name, img in photos.items():
        path = out / "train" / f"{name}.png"
        if not path.exists():
            im = Image.fromarray(img)
            im.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
            im.save(path)
    (out / "photos.json").write_text(json.dumps({"split": "train", "photos": sorted(photos)}, indent=1))
    return out


def build_colorize(work: str | Path, extra: str | Path | None, max_steps: int | None = None,
                   preset: str = PRESET) -> Path:
    """Write the photos (once) and train (or resume) the colouriser into ``<work>/colorize-pix2pix``."""
    from dit_translate.paired.train import train
    from dit_translate.presets import load_preset

    work = Path(work)
    data = write_photos(work / "colorize-photos", extra)
    return train(load_preset(preset), data, work / "colorize-pix2pix", max_steps=max_steps).out


def export_colorize(run: str | Path, out: str | Path) -> Path:
    """Copy the loadable part of the run folder ``run`` (paired.json, model/, loss.csv) to ``out``, whole."""
    run, out = Path(run), Path(out)
    with replaced_folder(out) as tmp:
        shutil.copytree(run, tmp, ignore=shutil.ignore_patterns("train_state*", "samples", "run.json", ".*", "eval"))
    return out


def write_card(folder: str | Path, run: str | Path) -> Path:
    """Write the model card of the exported colouriser ``folder`` (trained in ``run``)."""
    from dit_translate.tiny.colorize_card import write_colorize_card

    return write_colorize_card(folder, run)
