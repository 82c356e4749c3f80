"""The one guided denoiser: noise prediction with classifier-free guidance over any diffusion network.

A network is called as ``net(x, t, **inputs)`` and returns its prediction (eps, v or x0). What the
condition adds to that call, and how it is dropped for the unconditional branch, is the condition's
business:

- ``TextCondition`` (a ``UNet2DConditionModel``): text embeddings as ``encoder_hidden_states``; the
  unconditional branch uses the negative prompt's embeddings.
- ``ImageCondition`` (the paired DiT): a CLIP image embedding (and optionally a source latent); the
  unconditional branch keeps the inputs but sets ``keep = False``, which swaps in the learnt null embedding.

Both branches run in one batch in diffusers' order ``[uncond, cond]``. ``v_prediction`` and ``sample``
outputs become the noise they imply; with ``clip_x0`` (pixel models) ``x0_hat`` is clamped to [-1, 1]
and the noise re-derived from it, as ``DDIMScheduler(clip_sample=True)`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dit_translate.diffusion.ddim import Schedule, output_to_eps, predict_x0
from dit_translate.diffusion.spec import PREDICTION_TYPES

Network = Callable[..., torch.Tensor]
"""``net(x, t, **inputs) -> prediction``: ``x`` (B, C, H, W), ``t`` an integer timestep."""


class Condition(Protocol):
    def inputs(self, batch: int, guided: bool) -> dict[str, Any]:
        """The network's keyword inputs for a batch of ``batch`` samples; ``guided``: for the batch
        ``[uncond, cond]`` of ``2 * batch`` samples."""

    @property
    def guidable(self) -> bool:
        """Whether an unconditional branch exists (classifier-free guidance is possible)."""


@dataclass(frozen=True)
class TextCondition:
    """Text conditioning of a U-Net: ``cond`` and optional ``uncond`` embeddings, each (1, L, D)."""

    cond: torch.Tensor
    uncond: torch.Tensor | None = None

    @property
    def guidable(self) -> bool:
        return self.uncond is not None

    def inputs(self, batch: int, guided: bool) -> dict[str, Any]:
        cond = self.cond.expand(batch, -1, -1)
        if not guided:
            return {"encoder_hidden_states": cond}
        return {"encoder_hidden_states": torch.cat([self.uncond.expand(batch, -1, -1), cond])}


@dataclass(frozen=True)
class ImageCondition:
    """Image conditioning of the paired DiT: CLIP embeddings (B, D) and, for ``source_concat`` models, the
    source latents (B, C, h, w). The unconditional branch is the DiT's null embedding (``keep = False``)."""

    embedding: torch.Tensor
    source: torch.Tensor | None = None
    guidable: bool = True

    def inputs(self, batch: int, guided: bool) -> dict[str, Any]:
        if not guided:
            return {"cond": self.embedding, "source": self.source}
        keep = torch.arange(2 * batch, device=self.embedding.device) >= batch
        source = None if self.source is None else torch.cat([self.source, self.source])
        return {"cond": torch.cat([self.embedding, self.embedding]), "source": source, "keep": keep}


def unet_network(unet: torch.nn.Module) -> Network:
    """A diffusers ``UNet2DConditionModel`` / ``UNet2DModel`` as a ``Network`` (scalar timestep tensor)."""

    def net(x: torch.Tensor, t: int, **inputs: Any) -> torch.Tensor:
        return unet(x, torch.tensor(t, device=x.device), **inputs).sample

    return net


def dit_network(dit: torch.nn.Module) -> Network:
    """The paired DiT as a ``Network`` (one timestep per sample)."""

    def net(x: torch.Tensor, t: int, **inputs: Any) -> torch.Tensor:
        return dit(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), **inputs)

    return net


class Denoiser:
    """Epsilon prediction ``eps(x, t)`` with classifier-free guidance ``eps_u + w (eps_c - eps_u)``.

    ``nfe`` counts network evaluations per sample: one guided step of a batch of one counts 2, an
    unguided step 1.
    """

    def __init__(self, net: Network, schedule: Schedule, prediction_type: str = "epsilon",
                 clip_x0: bool = False) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        self.net = net
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.clip_x0 = clip_x0
        self.nfe = 0

    def _eps(self, output: torch.Tensor, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.prediction_type == "epsilon" and not self.clip_x0:
            return output
        a = self.schedule.alpha(t).to(x.device, x.dtype)
        eps = output_to_eps(output, x, a, self.prediction_type)
        if not self.clip_x0:
            return eps
        x0 = predict_x0(x, eps, a).clamp(-1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    def unguided(self, x: torch.Tensor, t: int, cond: Condition | None = None) -> torch.Tensor:
        """One network call on batch ``x`` (B, C, H, W), conditional if ``cond`` is given -> eps (B, C, H, W)."""
        self.nfe += x.shape[0]
        inputs = {} if cond is None else cond.inputs(x.shape[0], guided=False)
        return self._eps(self.net(x, t, **inputs), x, t)

    def __call__(self, x: torch.Tensor, t: int, cond: Condition | None = None, guidance: float = 1.0) -> torch.Tensor:
        """Guided epsilon for ``x`` (B, C, H, W) at timestep ``t``; CFG only when ``guidance != 1``."""
        if cond is None or guidance == 1.0 or not cond.guidable:
            return self.unguided(x, t, cond)
        b = x.shape[0]
        self.nfe += 2 * b
        both = torch.cat([x, x])
        out_u, out_c = self.net(both, t, **cond.inputs(b, guided=True)).chunk(2)
        return self._eps(out_u + guidance * (out_c - out_u), x, t)
