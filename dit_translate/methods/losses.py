"""AGG's losses (docs/methods.md §5.6): the structure regulariser, the range loss, and the two style losses.

Images are (B, 3, H, W) float tensors in [-1, 1]; every loss returns a 0-d tensor and is
differentiable with respect to its image (or model-space) argument. The style losses are
callables ``loss(images, generator) -> weighted loss`` (``StyleLoss``), so one sampler serves
text guidance (CLIP direction over augmented crops, averaged over a CLIP ensemble) and image
guidance (DINO [CLS] distance plus a pixel MSE to the style image, as the official code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from dit_translate.encoders import ClipEncoder, DinoEncoder, fit_square

TEMPLATES = ("{}", "a photo of {}.", "a picture of {}.", "an image of {}.", "a rendering of {}.", "art of {}.")
"""Prompt templates the text embeddings are averaged over (each normalised, then the mean renormalised): our
choice [I]. The released AGG code averages the raw features of CLIP's 80 ImageNet templates
(``imagenet_templates``), then normalises once."""


def imagenet_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet zero-shot templates as format strings (open_clip ships them)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


class StyleLoss(Protocol):
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Weighted style loss (0-d) of images (B, 3, H, W) in [-1, 1]; ``generator`` drives augmentations."""


def structure_loss(x0: torch.Tensor, x0_ref: torch.Tensor) -> torch.Tensor:
    """AGG's regulariser ``mean |x0 - x0_ref|``: L1 to the inversion's Tweedie estimate at the same step."""
    return (x0 - x0_ref).abs().mean()


def range_loss(images: torch.Tensor) -> torch.Tensor:
    """``mean((x - clamp(x, -1, 1))^2)``: zero inside the valid pixel range."""
    return (images - images.clamp(-1, 1)).pow(2).mean()


def noise_mix(x0: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """DiffuseIT's noise-mixed estimate ``sqrt(1 - a) x0 + (1 - sqrt(1 - a)) x_t`` (pixel models)."""
    fac = (1 - alpha) ** 0.5
    return fac * x0 + (1 - fac) * x_t


def random_crops(
    images: torch.Tensor,
    n: int,
    size: int,
    generator: torch.Generator | None = None,
    *,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    degrees: float = 10.0,
    flip: bool = True,
) -> torch.Tensor:
    """``n`` random crops of each image: (B, C, H, W) -> (n * B, C, size, size), differentiable.

    Each crop is a RandomResizedCrop (area ``scale``, aspect ``ratio``) rotated by up to ``degrees``
    and flipped horizontally with probability 1/2 (when ``flip``), sampled with one affine grid from
    the square centre crop of the image; the random numbers come from ``generator`` on the CPU.
    """
    b = images.shape[0]
    square = fit_square(images, size)
    u = torch.rand(n * b, 6, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1])
    w, h = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
    angle = math.radians(degrees) * (2 * u[:, 4] - 1)
    sign = torch.where(u[:, 5] < 0.5, -1.0, 1.0) if flip else torch.ones(n * b)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [torch.stack([cos * w * sign, -sin * h, cx], -1), torch.stack([sin * w * sign, cos * h, cy], -1)], 1
    ).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n * b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(square.repeat(n, 1, 1, 1), grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def text_embedding(clip: ClipEncoder, text: str, templates: Sequence[str] = TEMPLATES, *,
                   raw_mean: bool = False) -> torch.Tensor:
    """Unit-norm (D,) embedding of ``text``: the mean over ``templates`` of the unit-norm embeddings, or with
    ``raw_mean`` of the raw features (the released AGG code), renormalised."""
    prompts = [t.format(text) for t in templates]
    features = clip.embed_text(prompts, unit=False) if raw_mean else clip.embed_text(prompts)
    return F.normalize(features.mean(0), dim=-1)


def clip_direction(
    clip: ClipEncoder,
    target_text: str,
    source_image: torch.Tensor,
    source_text: str | None = None,
    *,
    source_text_weight: float = 0.4,
    source_image_weight: float = 0.2,
    templates: Sequence[str] = TEMPLATES,
    raw_mean: bool = False,
) -> torch.Tensor:
    """The target direction ``normalize(E_T(trg) - 0.4 E_T(src) + 0.2 E_I(x_src))`` (D,), unit norm.

    ``source_image`` (1, 3, H, W) in [-1, 1]; without ``source_text`` its term is left out.
    """
    g = text_embedding(clip, target_text, templates, raw_mean=raw_mean)
    if source_text:
        g = g - source_text_weight * text_embedding(clip, source_text, templates, raw_mean=raw_mean)
    with torch.no_grad():
        g = g + source_image_weight * clip.embed_image(source_image.to(clip.device))[0]
    return F.normalize(g, dim=-1)


@dataclass
class ClipGuidanceLoss:
    """Text guidance: ``-weight * mean_models mean_crops cos(E_I(crop), g_model)``, in [-weight, weight].

    Images are scored on the device of the CLIP models (the guidance and diffusion models share one).
    """

    clips: tuple[ClipEncoder, ...]
    directions: tuple[torch.Tensor, ...]
    weight: float = 200.0
    crops: int = 8

    def similarity(self, images: torch.Tensor, generator: torch.Generator | None = None, crops: int | None = None
                   ) -> torch.Tensor:
        """``mean_models mean_crops cos(E_I(crop), g_model)`` (0-d, in [-1, 1]); ``crops=0`` scores the whole image."""
        images = images.float()
        n = self.crops if crops is None else crops
        sims = [
            (clip.embed_image(random_crops(images, n, clip.size, generator) if n else images) @ g).mean()
            for clip, g in zip(self.clips, self.directions)
        ]
        return torch.stack(sims).mean()

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return -self.weight * self.similarity(images, generator)


@dataclass
class DinoGuidanceLoss:
    """Image guidance: ``weight * MSE(CLS(x), CLS(style)) + pixel_weight * MSE(x, style)``.

    ``target`` (1, 3, H, W) is the style image at the size of the images to score.
    """

    dino: DinoEncoder
    target_cls: torch.Tensor
    target: torch.Tensor
    weight: float = 200.0
    pixel_weight: float = 200.0
    pre_norm: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = images.float()
        feats = self.dino.cls_token(images, pre_norm=self.pre_norm)
        loss = self.weight * F.mse_loss(feats, self.target_cls.expand_as(feats))
        if self.pixel_weight:
            loss = loss + self.pixel_weight * F.mse_loss(images, self.target.expand_as(images))
        return loss


def text_guidance(
    clips: Sequence[ClipEncoder],
    target_text: str,
    source_image: torch.Tensor,
    source_text: str | None = None,
    *,
    weight: float = 200.0,
    crops: int = 8,
    source_text_weight: float = 0.4,
    source_image_weight: float = 0.2,
    templates: Sequence[str] = TEMPLATES,
    raw_mean: bool = False,
) -> ClipGuidanceLoss:
    """The CLIP-direction style loss towards ``target_text`` for ``source_image`` (1, 3, H, W) in [-1, 1]."""
    if not clips:
        raise ValueError("text guidance needs at least one CLIP model")
    directions = tuple(
        clip_direction(c, target_text, source_image, source_text, source_text_weight=source_text_weight,
                       source_image_weight=source_image_weight, templates=templates, raw_mean=raw_mean)
        for c in clips
    )
    return ClipGuidanceLoss(tuple(clips), directions, weight, crops)


def image_guidance(
    dino: DinoEncoder, style_image: torch.Tensor, *, weight: float = 200.0, pixel_weight: float = 200.0,
    pre_norm: bool = False,
) -> DinoGuidanceLoss:
    """The DINO [CLS] + pixel style loss towards ``style_image`` (1, 3, H, W) in [-1, 1], at the output size;
    ``pre_norm`` takes [CLS] before the ViT's final norm (the released code)."""
    style_image = style_image.float().to(dino.device)
    with torch.no_grad():
        target_cls = dino.cls_token(style_image, pre_norm=pre_norm)
    return DinoGuidanceLoss(dino, target_cls, style_image, weight, pixel_weight, pre_norm)


@dataclass
class ProgressiveClip:
    """The released text runs' adaptive CLIP weight (``--use_prog_contrast --regularize_content``): ``last`` is the
    last CLIP loss (``-cos``) any step computed, first the source image's (whole, no crops); the MCG step weighs
    the CLIP term 2x while ``last > -0.5`` and 0.5x while ``last < -0.5``; the refinement keeps the weight."""

    loss: ClipGuidanceLoss
    last: float

    def _score(self, images: torch.Tensor, generator: torch.Generator | None, factor: float) -> torch.Tensor:
        sim = self.loss.similarity(images, generator)
        self.last = -float(sim.detach())
        return -self.loss.weight * factor * sim

    def mcg(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        factor = 2.0 if self.last > -0.5 else 0.5 if self.last < -0.5 else 1.0
        return self._score(images, generator, factor)

    def refine(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._score(images, generator, 1.0)
