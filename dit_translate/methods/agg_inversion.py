"""AGG's DDIM inversions of the source, each keeping the Tweedie estimate ``x0_inv[t]`` that the structure
regulariser pulls towards: diffusers' convention (``invert_with_x0``) and the released code's (``invert_with_x0_adm``)."""

from __future__ import annotations

import torch

from dit_translate.diffusion.ddim import StepInfo, Steps, ddim_invert, ddim_update, predict_x0
from dit_translate.diffusion.denoiser import Denoiser, TextCondition
from dit_translate.methods.common import Progress, step_reporter


def invert_with_x0(
    denoiser: Denoiser, z0: torch.Tensor, run: Steps, cond: TextCondition | None, progress: Progress | None = None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``ddim_invert`` of ``z0`` over ``run`` (no CFG) -> the latent at ``run.timesteps[0]`` and
    ``{t: x0_inv[t]}``, the Tweedie estimate of the inversion step that arrived at ``x_t``."""
    x0s: dict[int, torch.Tensor] = {}
    report = step_reporter(progress, "inverting the source")

    def record(step: StepInfo) -> None:
        x0s[step.t] = step.x0
        if report is not None:
            report(step)

    latents = ddim_invert(lambda x, t: denoiser.unguided(x, t, cond), z0, run, denoiser.schedule, record)
    return latents[run.timesteps[0]], x0s


def invert_with_x0_adm(
    denoiser: Denoiser, z0: torch.Tensor, run: Steps, cond: TextCondition | None, progress: Progress | None = None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The released code's inversion (``ddim_reverse_sample`` from index 0): ``z0`` stands at the lowest timestep
    of ``run``; each step evaluates epsilon at its *source* level and keeps ``x0_inv[t] = x0_hat(x_t)``; one more
    evaluation at the top level gives its ``x0_inv``. Returns the top latent and ``{t: x0_inv[t]}``."""
    ascending = run.timesteps[::-1]
    report = step_reporter(progress, "inverting the source")
    x0s: dict[int, torch.Tensor] = {}
    x = z0
    for k, t in enumerate(ascending):
        eps = denoiser.unguided(x, t, cond)
        x0 = predict_x0(x, eps, denoiser.schedule.alpha(t))
        x0s[t] = x0
        if report is not None:
            report(StepInfo(k, len(ascending), t, x, eps, x0))
        if k + 1 < len(ascending):
            x = ddim_update(x0, eps, denoiser.schedule.alpha(ascending[k + 1]))
    return x, x0s
