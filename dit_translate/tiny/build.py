"""Build the tiny world in stages, each resuming from its checkpoint under ``work``.

``<work>/vae``: stage 1, the VAE.  ``<work>/sd``: stage 2, text encoder + U-Net.
"""

from __future__ import annotations

from pathlib import Path

from dit_translate.tiny.data import TinyDataset
from dit_translate.tiny.train_vae import VAETrainConfig, train_vae


def build_vae(work: str | Path, steps: int) -> None:
    """Stage 1: train (or finish) the VAE; writes ``<work>/vae/final``."""
    cfg = VAETrainConfig(steps=steps)
    data = TinyDataset("train", cfg.size, cfg.crops_per_photo, seed=cfg.seed)
    train_vae(Path(work) / "vae", cfg, data)
