"""Semantic-discrepancy correction of SDEdit (Yuan et al., IEEE/CAA JAS 2025).

SDEdit's noised source loses semantic integrity in the decoder; the correction replaces erroneous
decoder features of the SDEdit pass with accurate ones computed from the source itself:

- ``released`` (exactly what the authors' runnable ``main.py`` does): ONE U-Net pass on the clean
  source latent (empty prompt, no CFG, at ``feature_timestep``) records the self-attention
  probabilities of ``up_blocks[1]``'s attentions (LDM ``output_blocks[3..5]``); they overwrite the
  SDEdit pass's at every step in both CFG branches. Strength follows the authors' sampler
  (``Steps.ldm_tail``). Cost: SDEdit + 1 U-Net evaluation.
- ``full`` (INFERRED from the authors' notebooks' ``_all`` runs, whose U-Net code is not released):
  ``released`` plus the residual feature of ``up_blocks[1].resnets[2]`` from the same pass.
- ``trajectory`` (the paper's description, PnP-style; ours): a DDIM inversion of the source over
  SDEdit's own timesteps records features per timestep; step ``t`` of SDEdit receives the features
  of inversion timestep ``t``, attention maps during the first ``tau_attn`` and ResBlock features
  during the first ``tau_feat`` fraction of the steps run; diffusers' strength rule. Cost: SDEdit +
  one inversion.
"""

from __future__ import annotations

import dataclasses

import torch

from dit_translate.diffusion.ddim import Steps, ddim_invert
from dit_translate.diffusion.denoiser import Denoiser
from dit_translate.diffusion.features import (
    FeatureSet,
    inject_features,
    record_features,
    windowed_selector,
)
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.knobs import check
from dit_translate.methods.common import Progress, TranslationResult, step_reporter
from dit_translate.methods.sdedit import Injector, sdedit
from dit_translate.methods.variants import CORRECTION

VARIANTS = tuple(CORRECTION)

DEFAULT_FEATURES = FeatureSet(
    attn_probs=("up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2"),
    resnet=("up_blocks.1.resnets.2",),
)
"""SD 1.x/2.x layers: LDM ``output_blocks[3..5]`` attention maps (``released``), block 5's ResBlock (``full``)."""


def released_injector(models: DiffusionModels, features: FeatureSet, feature_timestep: int = 1) -> Injector:
    """One clean-source U-Net pass records ``features``; they are injected at every timestep."""

    def injector(denoiser: Denoiser, z0: torch.Tensor, _run: Steps, _progress: Progress | None):
        with record_features(models.unet, features) as store:
            denoiser.unguided(z0, feature_timestep, models.empty_condition())
        return inject_features(models.unet, features, store, lambda _kind, _t: feature_timestep)

    return injector


def trajectory_injector(
    models: DiffusionModels, features: FeatureSet, tau_attn: float = 0.5, tau_feat: float = 0.8
) -> Injector:
    """A DDIM inversion over SDEdit's timesteps records ``features`` per timestep (PnP-style windows)."""
    check("tau_attn", tau_attn)
    check("tau_feat", tau_feat)

    def injector(denoiser: Denoiser, z0: torch.Tensor, run: Steps, progress: Progress | None):
        empty = models.empty_condition()
        with record_features(models.unet, features) as store:
            ddim_invert(
                lambda x, t: denoiser.unguided(x, t, empty), z0, run, denoiser.schedule,
                step_reporter(progress, "inverting the source"),
            )
        return inject_features(models.unet, features, store, windowed_selector(run.timesteps, tau_attn, tau_feat))

    return injector


def correct(
    models: DiffusionModels,
    image: torch.Tensor,
    prompt: str,
    *,
    variant: str = "released",
    features: FeatureSet | None = None,
    feature_timestep: int = 1,
    tau_attn: float = 0.5,
    tau_feat: float = 0.8,
    **sdedit_kwargs,
) -> TranslationResult:
    """SDEdit of ``image`` (1, 3, H, W) in [-1, 1] with the semantic-discrepancy correction.

    ``features`` defaults to ``DEFAULT_FEATURES`` (pass a preset's layer map for other U-Nets; ``released``
    keeps only its attention maps); an empty ``FeatureSet`` makes this exactly SDEdit under the variant's
    strength rule. Other keyword arguments are SDEdit's.
    """
    features = DEFAULT_FEATURES if features is None else features
    rule = Steps.ldm_tail
    if variant == "released":
        features = features.only("attn_probs")
        injector = released_injector(models, features, feature_timestep)
    elif variant == "full":
        injector = released_injector(models, features, feature_timestep)
    elif variant == "trajectory":
        injector, rule = trajectory_injector(models, features, tau_attn, tau_feat), Steps.tail
    else:
        raise ValueError(f"unknown correction variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    result = sdedit(models, image, prompt, injector=injector if features else None, strength_rule=rule,
                    **sdedit_kwargs)
    return dataclasses.replace(result, method=f"correct-{variant}")
