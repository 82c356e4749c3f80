"""Plug-and-Play diffusion features (Tumanyan et al., CVPR 2023), the slower baseline.

1. DDIM inversion (empty prompt, or ``inversion_prompt``) of the source latent (posterior mean) on the grid of
   ``inversion_steps`` (999 as the original, giving every timestep of the sampling grid), up to
   the timestep sampling starts from (the top of the schedule at ``strength=1``, the original).
2. Sampling with ``steps`` DDIM steps and CFG. At each step ``t`` the inverted source latent at
   ``t`` goes through the U-Net with the empty prompt; its ResBlock features (first ``tau_feat`` of
   the steps) and self-attention Q/K (first ``tau_attn``) replace the generated pass's in both CFG
   branches. The source pass is skipped once both windows are over.
"""

from __future__ import annotations

import torch

from dit_translate.diffusion.ddim import Steps, ddim_invert, ddim_step, max_steps
from dit_translate.diffusion.features import (
    KINDS,
    FeatureSet,
    inject_features,
    record_features,
    windowed_selector,
)
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.knobs import check
from dit_translate.methods.common import (
    Progress,
    TranslationResult,
    step_reporter,
    timed,
)

DEFAULT_FEATURES = FeatureSet(
    resnet=("up_blocks.1.resnets.1",),
    attn_qk=(
        "up_blocks.1.attentions.1",
        "up_blocks.1.attentions.2",
        "up_blocks.2.attentions.0",
        "up_blocks.2.attentions.1",
        "up_blocks.2.attentions.2",
        "up_blocks.3.attentions.0",
        "up_blocks.3.attentions.1",
        "up_blocks.3.attentions.2",
    ),
)
"""PnP's SD layers: ResBlock of decoder layer 4, self-attention Q/K of decoder layers 4-11."""

NEGATIVE_PROMPT = "ugly, blurry, black, low res, unrealistic"


def grid_holds(models: DiffusionModels, inversion_steps: int, run: Steps) -> bool:
    """Whether the ``inversion_steps`` grid contains every timestep of the sampling ``run``."""
    return set(run.timesteps) <= set(models.steps(inversion_steps).timesteps)


def compatible_inversion_steps(models: DiffusionModels, run: Steps, at_least: int = 1) -> int:
    """The smallest inversion grid size >= ``at_least`` whose timesteps include every timestep of ``run``
    (the model's finest grid always does)."""
    finest = max_steps(models.scheduler.config)
    for n in range(max(1, min(at_least, finest)), finest + 1):
        if grid_holds(models, n, run):
            return n
    return finest


def default_inversion_steps(models: DiffusionModels, preferred: int, steps: int, strength: float) -> int:
    """``preferred`` (a preset's grid) where it holds every sampling timestep of ``steps`` at ``strength``, else the
    sampling grid ``steps`` itself (which always does)."""
    return preferred if grid_holds(models, preferred, models.steps(steps).tail(strength)) else steps


def pnp(
    models: DiffusionModels,
    image: torch.Tensor,
    prompt: str,
    *,
    steps: int = 50,
    inversion_steps: int = 999,
    guidance: float = 7.5,
    negative_prompt: str = NEGATIVE_PROMPT,
    strength: float = 1.0,
    tau_feat: float = 0.8,
    tau_attn: float = 0.5,
    features: FeatureSet | None = None,
    inversion_prompt: str = "",
    progress: Progress | None = None,
) -> TranslationResult:
    """Translate ``image`` (1, 3, H, W) in [-1, 1] with PnP; deterministic (no random numbers).

    ``inversion_prompt`` conditions the inversion only (pnp-diffusers' ``--inversion_prompt``; the source
    passes keep the empty prompt, as there). The ``inversion_steps`` grid must hold every sampling timestep (``compatible_inversion_steps``), so
    each step injects the features of the source inverted to its own noise level; else ``ValueError``."""
    features = DEFAULT_FEATURES if features is None else features
    for name, value in (("strength", strength), ("guidance", guidance), ("tau_feat", tau_feat), ("tau_attn", tau_attn)):
        check(name, value)
    run = models.steps(steps).tail(strength)
    if len(run) == 0:
        raise ValueError(f"strength {strength} with {steps} steps runs no denoising step; raise one of them")
    full = models.steps(inversion_steps)
    if missing := sorted(set(run.timesteps) - set(full.timesteps), reverse=True):
        raise ValueError(
            f"inversion_steps {inversion_steps} lacks {len(missing)} of the {len(run)} sampling timesteps (e.g. "
            f"{missing[0]}): PnP would inject features of another noise level; use an inversion grid that holds "
            f"them, e.g. inversion_steps {compatible_inversion_steps(models, run, inversion_steps)}")
    # invert only as far as sampling starts (all the way up at strength 1, as the original)
    inv = Steps(tuple(t for t in full.timesteps if t <= run.timesteps[0]), full.stride)
    with torch.inference_mode(), timed() as elapsed:
        denoiser = models.denoiser()
        empty = models.empty_condition()
        inverting = models.condition(inversion_prompt) if inversion_prompt else empty
        cond = models.condition(prompt, negative_prompt, guidance)
        z0 = models.encode(image)
        inverted = ddim_invert(
            lambda x, t: denoiser.unguided(x, t, inverting), z0, inv, denoiser.schedule,
            step_reporter(progress, "inverting the source"),
        )
        source = {t: inverted[t] for t in run.timesteps}
        select = windowed_selector(run.timesteps, tau_attn, tau_feat)
        x = source[run.timesteps[0]]
        injections = 0
        for i, t in enumerate(run.timesteps):
            active = features.only(*(k for k in KINDS if select(k, t) is not None))
            store = {}
            if active:
                with record_features(models.unet, active, store):
                    denoiser.unguided(source[t], t, empty)
            with inject_features(models.unet, active, store, select) as log:
                eps = denoiser(x, t, cond, guidance)
            injections += len(log)
            x = ddim_step(x, eps, t, run.prev(t), denoiser.schedule)
            if progress is not None:
                progress(i + 1, len(run), "denoising")
        out = models.decode(x).float().cpu()
        seconds = elapsed()
    return TranslationResult(
        "pnp", out, seconds, denoiser.nfe, extras={"steps_run": len(run), "inversion_steps": len(inv), "inversion_grid": inversion_steps,
                                   "injections": injections},
    )
