"""SDEdit (Meng et al.): noise the source to an intermediate level, then denoise it with the prompt.

Strength semantics and random-number use are those of diffusers' ``StableDiffusionImg2ImgPipeline``
with a ``DDIMScheduler``: the last ``int(steps * strength)`` steps of the grid run; one CPU/GPU
generator seeded with ``seed`` first samples the VAE posterior, then draws the forward-process
noise (then, with ``eta > 0``, the DDIM noise), so the same inputs give the same output.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from diffusers.utils.torch_utils import randn_tensor

from dit_translate.diffusion.ddim import Steps, add_noise
from dit_translate.diffusion.denoiser import Denoiser
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.knobs import check
from dit_translate.methods.common import Progress, TranslationResult, denoise, timed
from dit_translate.runtime import make_generator

Injector = Callable[[Denoiser, torch.Tensor, Steps, "Progress | None"], AbstractContextManager]
"""``injector(denoiser, z0, run_steps, progress) -> context`` wrapping SDEdit's denoising loop (corrections)."""


def sdedit(
    models: DiffusionModels,
    image: torch.Tensor,
    prompt: str,
    *,
    strength: float = 0.8,
    steps: int = 50,
    guidance: float = 7.5,
    negative_prompt: str = "",
    seed: int = 0,
    eta: float = 0.0,
    progress: Progress | None = None,
    injector: Injector | None = None,
    strength_rule: Callable[[Steps, float], Steps] = Steps.tail,
) -> TranslationResult:
    """Translate ``image`` (1, 3, H, W) in [-1, 1] towards ``prompt``; ``injector`` adds a correction.

    ``strength_rule(grid, strength)`` picks the steps that run: diffusers' ``Steps.tail`` unless a method
    follows another released sampler (``Steps.ldm_tail``)."""
    for name, value in (("strength", strength), ("guidance", guidance), ("eta", eta)):
        check(name, value)
    run = strength_rule(models.steps(steps), strength)
    if len(run) == 0:
        raise ValueError(f"strength {strength} with {steps} steps runs no denoising step; raise one of them")
    with torch.inference_mode(), timed() as elapsed:
        generator = make_generator(seed, models.device)
        cond = models.condition(prompt, negative_prompt, guidance)
        denoiser = models.denoiser()
        z0 = models.encode(image, generator)
        noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
        x = add_noise(z0, noise, run.timesteps[0], denoiser.schedule)
        context = injector(denoiser, z0, run, progress) if injector is not None else nullcontext([])
        with context as injections:
            z = denoise(denoiser, x, run, cond, guidance, eta=eta, generator=generator, progress=progress)
        out = models.decode(z).float().cpu()
        seconds = elapsed()
    return TranslationResult(
        "sdedit", out, seconds, denoiser.nfe, extras={"steps_run": len(run), "start_timestep": run.timesteps[0], "injections": len(injections)},
    )
