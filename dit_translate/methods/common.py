"""What every method shares: the result type, progress reporting and the guided sampling loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from dit_translate.diffusion.ddim import Steps, ddim_sample
from dit_translate.diffusion.denoiser import Denoiser, TextCondition

Progress = Callable[[int, int, str], None]
"""``progress(done, total, description)``: called as work advances (tqdm in the CLI, gr.Progress in the app)."""


@dataclass
class TranslationResult:
    """One method's output.

    ``image``: (1, 3, H, W) float32 in [-1, 1] on the CPU. ``nfe``: U-Net evaluations per sample (a CFG
    step counts 2). ``metrics``: scalar scores; ``extras``: method-specific details (steps run, ...).
    """

    method: str
    image: torch.Tensor
    seconds: float
    nfe: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` object (without device, which the caller adds)."""
        h, w = self.image.shape[-2:]
        return {
            "method": self.method,
            "seconds": round(self.seconds, 4),
            "nfe": self.nfe,
            "size": [int(w), int(h)],
            "metrics": {k: float(v) for k, v in self.metrics.items()},
        }


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: ...; elapsed()`` gives seconds since entry (CUDA-synchronised)."""
    start = time.perf_counter()

    def elapsed() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    yield elapsed


def step_reporter(progress: Progress | None, description: str):
    """Adapt a ``Progress`` to the ``StepInfo`` callback of the DDIM loops."""
    if progress is None:
        return None
    return lambda step: progress(step.i + 1, step.n, description)


def denoise(
    denoiser: Denoiser,
    x: torch.Tensor,
    steps: Steps,
    cond: TextCondition | None,
    guidance: float,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
    description: str = "denoising",
) -> torch.Tensor:
    """The shared DDIM denoising loop with classifier-free guidance."""

    def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
        return denoiser(x_t, t, cond, guidance)

    return ddim_sample(eps_fn, x, steps, denoiser.schedule, eta, generator, step_reporter(progress, description))
