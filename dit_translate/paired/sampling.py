"""Sampling a paired checkpoint: DDIM with classifier-free guidance for the DiT, one pass for pix2pix.

``translate(models, source)`` returns a ``TranslationResult`` like the editing methods do. DDIM runs
through ``diffusion.ddim`` and guidance through ``diffusion.denoiser`` (the project's one
implementation of each), the latents through ``diffusion.codec``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from dit_translate.diffusion.codec import LatentCodec
from dit_translate.diffusion.ddim import Schedule, ddim_sample, make_steps
from dit_translate.diffusion.denoiser import Denoiser, ImageCondition, dit_network
from dit_translate.encoders import ClipEncoder
from dit_translate.knobs import check
from dit_translate.methods.common import (
    Progress,
    TranslationResult,
    step_reporter,
    timed,
)
from dit_translate.paired.config import DiffusionSpec
from dit_translate.runtime import make_generator

if TYPE_CHECKING:
    from dit_translate.paired.loading import PairedModels

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 3.0


def make_noise_scheduler(spec: DiffusionSpec) -> DDIMScheduler:
    """The DDIM scheduler of a training schedule and prediction type: no clipping, clean final level."""
    return DDIMScheduler(
        num_train_timesteps=spec.num_train_timesteps,
        beta_start=spec.beta_start,
        beta_end=spec.beta_end,
        beta_schedule=spec.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type=spec.prediction_type,
    )


def dit_denoiser(net: torch.nn.Module, scheduler: DDIMScheduler, pixel_space: bool) -> Denoiser:
    """The guided denoiser of a paired DiT (``x0_hat`` clamped to the image range in pixel space)."""
    return Denoiser(dit_network(net), Schedule.from_scheduler(scheduler), scheduler.config.prediction_type,
                    clip_x0=pixel_space)


@torch.no_grad()
def sample_dit(
    net: torch.nn.Module,
    codec: LatentCodec,
    clip: ClipEncoder,
    scheduler: DDIMScheduler,
    sources: torch.Tensor,
    *,
    steps: int,
    guidance: float,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Translate ``sources`` (B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1] by DDIM from pure noise."""
    device, dtype = sources.device, next(net.parameters()).dtype
    cond = ImageCondition(clip.embed_image(sources).to(dtype),
                          codec.encode(sources).to(dtype) if net.config.source_channels else None)
    h, w = (s // codec.factor for s in sources.shape[-2:])
    x = randn_tensor((sources.shape[0], codec.channels, h, w), generator=generator, device=device, dtype=dtype)
    denoiser = dit_denoiser(net, scheduler, pixel_space=codec.vae is None)

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return denoiser(x_t, t, cond, guidance)

    z = ddim_sample(eps_fn, x, make_steps(scheduler, steps), denoiser.schedule, eta, generator,
                    step_reporter(progress, "translating"))
    return codec.decode(z).float().clamp(-1, 1)


def translate_batch(models: PairedModels, sources: torch.Tensor, *, steps: int, guidance: float,
                    generator: torch.Generator | None = None, progress: Progress | None = None) -> torch.Tensor:
    """Translate (B, 3, H, W) sources in [-1, 1] with either model kind -> (B, 3, H, W) in [-1, 1]."""
    sources = sources.to(models.device)
    if models.kind == "pix2pix":
        if models.net.is_colorizer:
            from dit_translate.paired.pix2pix import colorize_batch

            return colorize_batch(models.net, sources)
        with torch.no_grad():
            return models.net(sources.to(next(models.net.parameters()).dtype)).float().clamp(-1, 1)
    return sample_dit(models.net, models.codec, models.clip, models.scheduler, sources, steps=steps,
                      guidance=guidance, generator=generator, progress=progress)


def translate(
    models: PairedModels,
    source: torch.Tensor,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> TranslationResult:
    """Translate one source (1, 3, H, W) in [-1, 1]; ``None`` knobs take the checkpoint's defaults."""
    steps = int(models.defaults.get("steps", DEFAULT_STEPS) if steps is None else steps)
    guidance = float(models.defaults.get("guidance", DEFAULT_GUIDANCE) if guidance is None else guidance)
    check("guidance", guidance)
    m = models.size_multiple
    if source.shape[-1] % m or source.shape[-2] % m:
        raise ValueError(f"image sides must be multiples of {m}, got {source.shape[-1]}x{source.shape[-2]}")
    generator = make_generator(seed)
    with timed() as elapsed:
        image = translate_batch(models, source, steps=steps, guidance=guidance, generator=generator,
                                progress=progress)
        seconds = elapsed()
    return TranslationResult(
        method=models.kind,
        image=image.cpu(),
        seconds=seconds,
        nfe=models.nfe(steps, guidance),
        extras={"steps": steps if models.kind == "dit" else 0, "guidance": guidance, "seed": seed,
                "checkpoint": models.name, "trained_steps": models.step, "untrained": models.untrained},
    )
