"""DINO's multi-crop augmentation (Caron et al. 2021) in batched torch ops, for the tiny DINO stage.

Each sample of a batch is one source image (a training photo or a ``dead_leaves`` image); it gives two
*global* views (area ``global_scale`` of the source, ``global_size`` px) and ``local_crops`` *local*
views (area ``local_scale``, ``local_size`` px). Every view is a random resized crop, flipped with
probability 1/2, colour-jittered (p 0.8: brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1),
greyed (p 0.2) and blurred (p 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, sigma 0.1-2.0 at
DINO's 224 px, scaled to the view size); global 2 is also solarised (p 0.2). Every random number comes
from the ``torch.Generator`` passed in, in a fixed order, so a view set depends only on that generator.
Views are float (N, 3, S, S) in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dit_translate.tiny.data import dead_leaves, load_photos

_LUMA = (0.299, 0.587, 0.114)
DINO_REFERENCE_SIZE = 224
"""The global-crop size at which DINO's blur sigmas (0.1-2.0 px) are given."""


@dataclass(frozen=True)
class ViewSpec:
    """How one kind of view is made: output size, crop area range and per-view probabilities."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float = 0.0


def photo_sources(side: int) -> list[torch.Tensor]:
    """The training photos (never ``HELD_OUT``) as uint8 (3, H, W), resized so the short side is ``side``."""
    out = []
    for img in load_photos("train").values():
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
        h, w = x.shape[-2:]
        size = (round(h * side / min(h, w)), round(w * side / min(h, w)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        out.append(x[0].round().clamp(0, 255).to(torch.uint8))
    return out


def leaves_sources(n: int, size: int, seed: int) -> list[torch.Tensor]:
    """``n`` ``dead_leaves`` images as uint8 (3, size, size), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(dead_leaves(size, rng).copy()).permute(2, 0, 1).contiguous() for _ in range(n)]


def crop_boxes(h: int, w: int, n: int, scale: tuple[float, float], g: torch.Generator,
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """``n`` random crop boxes (top, left, height, width), int64 (n, 4), inside an (h, w) image.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio`` (RandomResizedCrop's law;
    boxes that would not fit are clamped to the image instead of re-drawn).
    """
    u = torch.rand(n, 4, generator=g, dtype=torch.float64)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * h * w
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    ch = (area / aspect).sqrt().round().clamp(1, h).long()
    cw = (area * aspect).sqrt().round().clamp(1, w).long()
    top = ((h - ch + 1) * u[:, 2]).floor().long()
    left = ((w - cw + 1) * u[:, 3]).floor().long()
    return torch.stack([top, left, ch, cw], 1)


def resized_crops(sources: Sequence[torch.Tensor], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``boxes[i]`` of uint8 ``sources[i]`` and resize (bilinear, antialiased) -> float (N, 3, size, size) in [0, 1]."""
    out = []
    for src, (top, left, h, w) in zip(sources, boxes.tolist()):
        patch = src[:, top : top + h, left : left + w][None].float() / 255.0
        out.append(F.interpolate(patch, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out).clamp(0, 1)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (N, 3, H, W) -> (N, 1, H, W)."""
    w = torch.tensor(_LUMA, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of (N, 3, H, W) RGB by ``turns`` (N,) of a full turn, in the YIQ chroma plane
    (a linear stand-in for HSV hue rotation; luma is unchanged)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=x.dtype)
    from_yiq = torch.linalg.inv(to_yiq)
    yiq = torch.einsum("ij,njhw->nihw", to_yiq, x)
    a = 2 * math.pi * turns.to(x.dtype)
    cos, sin = a.cos().view(-1, 1, 1), a.sin().view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], 1)
    return torch.einsum("ij,njhw->nihw", from_yiq, yiq)


def colour_jitter(x: torch.Tensor, g: torch.Generator, p: float = 0.8, brightness: float = 0.4,
                  contrast: float = 0.4, saturation: float = 0.2, hue: float = 0.1) -> torch.Tensor:
    """ColorJitter (fixed order brightness, contrast, saturation, hue) on a random ``p`` of (N, 3, H, W) in [0, 1]."""
    n = x.shape[0]
    u = torch.rand(n, 5, generator=g)
    amounts = torch.tensor([brightness, contrast, saturation])
    factor = (1 + amounts * (2 * u[:, :3] - 1)).view(n, 3, 1, 1, 1)  # each uniform in [1 - amount, 1 + amount]
    y = (x * factor[:, 0]).clamp(0, 1)
    mean = grey(y).mean((1, 2, 3), keepdim=True)
    y = (mean + (y - mean) * factor[:, 1]).clamp(0, 1)
    y = (grey(y) + (y - grey(y)) * factor[:, 2]).clamp(0, 1)
    y = rotate_hue(y, hue * (2 * u[:, 3] - 1)).clamp(0, 1)
    return torch.where((u[:, 4] < p).view(-1, 1, 1, 1), y, x)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), one ``sigma`` (N,) in pixels per image (reflect padding)."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None].to(x.dtype)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    y = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def augment(x: torch.Tensor, spec: ViewSpec, g: torch.Generator) -> torch.Tensor:
    """Flip, colour jitter, greyscale, blur and solarise crops (N, 3, S, S) in [0, 1] -> same, in [-1, 1]."""
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    x = colour_jitter(x, g)
    to_grey = torch.rand(n, generator=g) < 0.2
    x = torch.where(to_grey.view(-1, 1, 1, 1), grey(x).expand_as(x), x)
    u = torch.rand(n, 3, generator=g)
    sigma = (0.1 + 1.9 * u[:, 0]) * spec.size / DINO_REFERENCE_SIZE
    x = torch.where((u[:, 1] < spec.blur_p).view(-1, 1, 1, 1), gaussian_blur(x, sigma), x)
    x = torch.where(((u[:, 2] < spec.solarize_p).view(-1, 1, 1, 1)) & (x >= 0.5), 1 - x, x)
    return x * 2 - 1


class MultiCrop:
    """Draws a batch of DINO views from photo and dead-leaves sources.

    ``__call__(batch, g)`` -> ``(globals, locals)``: float (2B, 3, G, G) ordered [view 1 of all samples,
    view 2 of all samples] and (L*B, 3, S, S) ordered by local view, all in [-1, 1]. A sample's source is
    a dead-leaves image with probability ``synthetic_p``, else a photo (each photo equally likely).
    """

    def __init__(self, photos: Sequence[torch.Tensor], leaves: Sequence[torch.Tensor], global_size: int = 64,
                 local_size: int = 32, local_crops: int = 6, global_scale: tuple[float, float] = (0.35, 1.0),
                 local_scale: tuple[float, float] = (0.05, 0.35), synthetic_p: float = 0.5) -> None:
        self.photos, self.leaves = list(photos), list(leaves)
        self.synthetic_p = synthetic_p if self.leaves else 0.0
        self.global_views = (ViewSpec(global_size, global_scale, 1.0), ViewSpec(global_size, global_scale, 0.1, 0.2))
        self.local_view = ViewSpec(local_size, local_scale, 0.5)
        self.local_crops = local_crops

    def sources(self, batch: int, g: torch.Generator) -> list[torch.Tensor]:
        """``batch`` source images drawn with replacement (uint8 (3, H, W) each)."""
        synthetic = torch.rand(batch, generator=g) < self.synthetic_p
        photo = torch.randint(len(self.photos), (batch,), generator=g)
        leaf = torch.randint(max(1, len(self.leaves)), (batch,), generator=g)
        return [self.leaves[int(j)] if s else self.photos[int(i)] for s, i, j in zip(synthetic, photo, leaf)]

    def views(self, sources: Sequence[torch.Tensor], spec: ViewSpec, g: torch.Generator) -> torch.Tensor:
        """One view of each source: (B, 3, S, S) in [-1, 1]."""
        boxes = torch.cat([crop_boxes(s.shape[1], s.shape[2], 1, spec.scale, g) for s in sources])
        return augment(resized_crops(sources, boxes, spec.size), spec, g)

    def __call__(self, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        sources = self.sources(batch, g)
        globals_ = torch.cat([self.views(sources, spec, g) for spec in self.global_views])
        locals_ = [self.views(sources, self.local_view, g) for _ in range(self.local_crops)]
        return globals_, torch.cat(locals_) if locals_ else globals_.new_zeros(0, 3, self.local_view.size,
                                                                               self.local_view.size)
