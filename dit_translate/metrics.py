"""Image metrics shared by the CLI, the app, evaluation and the tests.

Images are (1, 3, H, W) or (3, H, W) tensors in [-1, 1]. SSIM follows the correction paper's
protocol: ``skimage.metrics.structural_similarity`` on grayscale images in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity


def _gray(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    return rgb2gray((x.clamp(-1, 1) / 2 + 0.5).permute(1, 2, 0).numpy())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Grayscale SSIM in [-1, 1] (1 = identical) of two same-size images in [-1, 1]."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"ssim needs images of one size, got {tuple(a.shape[-2:])} and {tuple(b.shape[-2:])}")
    ga, gb = _gray(a), _gray(b)
    win = min(7, *ga.shape)
    win -= 1 - win % 2  # SSIM needs an odd window no larger than the image
    if win < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got {ga.shape[1]}x{ga.shape[0]}")
    return float(structural_similarity(ga, gb, data_range=1.0, win_size=win))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two same-size images in [-1, 1], measured on [0, 1] (inf when identical)."""
    mse = ((a.float().clamp(-1, 1) - b.float().clamp(-1, 1)) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))
