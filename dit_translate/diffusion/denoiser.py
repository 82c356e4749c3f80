"""Noise prediction with classifier-free guidance over a diffusers U-Net, with NFE counting."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dit_translate.diffusion.ddim import PREDICTION_TYPES, Schedule, output_to_eps, predict_x0


@dataclass(frozen=True)
class TextCondition:
    """Text conditioning of a U-Net: ``cond`` and optional ``uncond`` embeddings, each (1, L, D)."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None


class Denoiser:
    """Epsilon prediction ``eps(x, t)`` of a ``UNet2DConditionModel`` (text) or ``UNet2DModel`` (pixels).

    Classifier-free guidance ``eps_u + w (eps_c - eps_u)`` evaluates both branches in one batch
    ``[uncond, cond]`` (as diffusers' pipelines do). ``v_prediction`` and ``sample`` models are
    converted to epsilon. ``nfe`` counts U-Net evaluations per sample: one CFG step of a batch of
    one counts 2, an unguided step 1.
    """

    def __init__(self, unet: torch.nn.Module, schedule: Schedule, prediction_type: str = "epsilon") -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        self.unet = unet
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.nfe = 0

    @property
    def conditional(self) -> bool:
        """True for text-conditional U-Nets (they take ``encoder_hidden_states``)."""
        return getattr(self.unet.config, "cross_attention_dim", None) is not None

    def raw(self, x: torch.Tensor, t: int, context: torch.Tensor | None) -> torch.Tensor:
        """One U-Net call on batch ``x`` (B, C, H, W) with optional ``context`` (B, L, D) -> eps (B, C, H, W)."""
        self.nfe += x.shape[0]
        timestep = torch.tensor(t, device=x.device)
        if context is None:
            out = self.unet(x, timestep).sample
        else:
            out = self.unet(x, timestep, encoder_hidden_states=context).sample
        return output_to_eps(out, x, self.schedule.alpha(t), self.prediction_type)

    def __call__(
        self, x: torch.Tensor, t: int, cond: TextCondition | None = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """Guided epsilon for ``x`` (B, C, H, W) at timestep ``t``; CFG only when ``guidance != 1``."""
        if cond is None:
            return self.raw(x, t, None)
        b = x.shape[0]
        if guidance == 1.0 or cond.uncond is None:
            return self.raw(x, t, cond.cond.expand(b, -1, -1))
        context = torch.cat([cond.uncond.expand(b, -1, -1), cond.cond.expand(b, -1, -1)])
        eps_u, eps_c = self.raw(torch.cat([x, x]), t, context).chunk(2)
        return eps_u + guidance * (eps_c - eps_u)

    def x0(self, x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """Tweedie x0 estimate of ``x`` at ``t`` from its epsilon."""
        return predict_x0(x, eps, self.schedule.alpha(t))
