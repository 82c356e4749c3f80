"""DDIM sampling and inversion as small pure functions over an epsilon predictor.

Notation (DDPM/DDIM, epsilon prediction): ``a_t`` is the cumulative alpha of timestep ``t``;
``x0_hat = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t)``.

Timesteps come from a diffusers scheduler (``set_timesteps``), so spacing, ``steps_offset`` and the
"final alpha" follow the model's own scheduler config. A step from ``t`` goes to
``t - num_train_timesteps // num_steps`` exactly as in ``diffusers.DDIMScheduler``; inversion walks the
same grid upwards and evaluates the model at the *target* timestep, as ``diffusers.DDIMInverseScheduler``
does, so the U-Net sees exactly the sampling timesteps during inversion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from dit_translate.diffusion.spec import PREDICTION_TYPES

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]
"""``eps_fn(x, t) -> eps``: the noise prediction for ``x`` (B, C, H, W) at integer timestep ``t``."""



@dataclass(frozen=True)
class StepInfo:
    """What a DDIM loop passes its callback after step ``i`` of ``n`` (0-based), taken at timestep ``t``:
    the new ``x``, and the model's ``eps`` and ``x0`` estimate that made it (as k-diffusion passes
    ``denoised``)."""

    i: int
    n: int
    t: int
    x: torch.Tensor
    eps: torch.Tensor
    x0: torch.Tensor


StepCallback = Callable[[StepInfo], None]


@dataclass(frozen=True)
class Schedule:
    """The discrete noise schedule of a diffusion model.

    ``alphas_cumprod``: (T,) float32, decreasing in t. ``final_alpha``: cumulative alpha used for the
    level "below" timestep 0 (1.0 or ``alphas_cumprod[0]``, per the scheduler's ``set_alpha_to_one``).
    """

    alphas_cumprod: torch.Tensor
    final_alpha: torch.Tensor
    num_train_timesteps: int

    @classmethod
    def from_scheduler(cls, scheduler) -> Schedule:
        """Read the schedule of a diffusers DDIM-family scheduler (``DDIMScheduler``, ``DDIMInverseScheduler``...)."""
        alphas = scheduler.alphas_cumprod.to(torch.float32)
        set_to_one = getattr(scheduler.config, "set_alpha_to_one", True)
        final = torch.tensor(1.0) if set_to_one else alphas[0].clone()
        return cls(alphas, final, int(scheduler.config.num_train_timesteps))

    def alpha(self, t: int) -> torch.Tensor:
        """Cumulative alpha of timestep ``t`` (``final_alpha`` for t < 0), a 0-d float32 tensor."""
        return self.alphas_cumprod[t] if t >= 0 else self.final_alpha


@dataclass(frozen=True)
class Steps:
    """A descending list of sampling timesteps and the grid stride between them.

    ``timesteps[i]`` steps to ``timesteps[i] - stride`` (which equals ``timesteps[i + 1]`` except at
    the end, where it may be negative: the clean level).
    """

    timesteps: tuple[int, ...]
    stride: int

    def __len__(self) -> int:
        return len(self.timesteps)

    def prev(self, t: int) -> int:
        return t - self.stride

    def tail(self, strength: float) -> Steps:
        """The last ``int(len * strength)`` steps: SDEdit's strength rule, as diffusers img2img applies it."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        n = len(self.timesteps)
        run = min(int(n * strength), n)
        return Steps(self.timesteps[n - run :], self.stride)

    def ldm_tail(self, strength: float) -> Steps:
        """The grid from index ``int(len * (1 - strength))`` on: the strength rule of the ldm/ControlNet DDIM
        sampler the correction's authors run (``ddim_v_hacked.py``: the source is noised at loop index
        ``int(total_steps * first_strength)``, ``first_strength = 1 - strength``). Computed in floating
        point as released: ``1 - 0.8`` is 0.19999999999999996, so 20 steps at 0.8 run 17, where ``tail`` runs 16."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        return Steps(self.timesteps[int(len(self.timesteps) * (1 - strength)) :], self.stride)


def max_steps(config) -> int:
    """The most sampling steps a DDIM scheduler ``config`` supports: "leading" spacing shifts its grid up by
    ``steps_offset``, so a finer grid would reach past the last training timestep."""
    offset = config.steps_offset if config.timestep_spacing == "leading" else 0
    return config.num_train_timesteps - offset


def make_steps(scheduler, num_steps: int) -> Steps:
    """The sampling grid of ``scheduler`` for ``num_steps`` steps (calls ``scheduler.set_timesteps``)."""
    if int(num_steps) < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    if num_steps > max_steps(scheduler.config):
        raise ValueError(f"steps must be at most {max_steps(scheduler.config)}, got {num_steps}")
    scheduler.set_timesteps(int(num_steps))
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return Steps(tuple(int(t) for t in scheduler.timesteps), stride)


def predict_x0(x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Tweedie estimate ``x0_hat = (x - sqrt(1 - a) eps) / sqrt(a)``."""
    return (x - (1 - alpha) ** 0.5 * eps) / alpha**0.5


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What a network predicting ``prediction_type`` is regressed on at ``x_t = sqrt(a) x0 + sqrt(1 - a) noise``:
    ``noise``, ``v = sqrt(a) noise - sqrt(1 - a) x0`` (Salimans & Ho 2022) or ``x0``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha**0.5 * noise - (1 - alpha) ** 0.5 * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def output_to_eps(output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The noise a network output implies at ``x`` (cumulative alpha ``a``), as ``DDIMScheduler.step`` derives it:
    ``eps = sqrt(a) v + sqrt(1 - a) x`` for v, ``eps = (x - sqrt(a) x0) / sqrt(1 - a)`` for x0."""
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha**0.5 * output + (1 - alpha) ** 0.5 * x
    if prediction_type == "sample":
        return (x - alpha**0.5 * output) / (1 - alpha) ** 0.5
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def ddim_sigma(alpha: torch.Tensor, alpha_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """DDIM noise scale ``eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev)``."""
    return eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)) ** 0.5


def ddim_update(
    x0: torch.Tensor,
    eps: torch.Tensor,
    alpha_prev: torch.Tensor,
    sigma: torch.Tensor | float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z``.

    The x0 and eps terms are separate arguments so that guided methods can change one of them only
    (AGG's asymmetric update passes a guided ``x0`` with the unguided ``eps``).
    """
    x_prev = alpha_prev**0.5 * x0 + (1 - alpha_prev - sigma**2) ** 0.5 * eps
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev


def ddim_step(
    x: torch.Tensor,
    eps: torch.Tensor,
    t: int,
    t_prev: int,
    schedule: Schedule,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM step from timestep ``t`` to ``t_prev`` (< t); equals ``DDIMScheduler.step`` without clipping."""
    a, a_prev = schedule.alpha(t), schedule.alpha(t_prev)
    return _step_from_x0(predict_x0(x, eps, a), eps, a, a_prev, eta, generator)


def _step_from_x0(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, a_prev: torch.Tensor, eta: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    if eta == 0:
        return ddim_update(x0, eps, a_prev)
    sigma = ddim_sigma(a, a_prev, eta)
    noise = randn_tensor(eps.shape, generator=generator, device=eps.device, dtype=eps.dtype)
    return ddim_update(x0, eps, a_prev, sigma, noise)


def ddim_sample(
    eps_fn: EpsFn,
    x: torch.Tensor,
    steps: Steps,
    schedule: Schedule,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run DDIM over ``steps`` from the noise level of ``steps.timesteps[0]`` down to the clean level."""
    n = len(steps)
    for i, t in enumerate(steps.timesteps):
        eps = eps_fn(x, t)
        a, a_prev = schedule.alpha(t), schedule.alpha(steps.prev(t))
        x0 = predict_x0(x, eps, a)
        x = _step_from_x0(x0, eps, a, a_prev, eta, generator)
        if callback is not None:
            callback(StepInfo(i, n, t, x, eps, x0))
    return x


def ddim_invert(
    eps_fn: EpsFn,
    x0: torch.Tensor,
    steps: Steps,
    schedule: Schedule,
    callback: StepCallback | None = None,
) -> dict[int, torch.Tensor]:
    """Deterministic DDIM inversion of clean ``x0`` up the grid of ``steps`` (run in reverse).

    Each step goes from level ``t - stride`` to level ``t`` with ``eps_fn`` evaluated at timestep ``t``
    (``diffusers.DDIMInverseScheduler``'s convention), so ``eps_fn`` sees exactly the timesteps that
    sampling over ``steps`` will see. Returns ``{t: x_t}`` for every timestep of ``steps``; the
    latent to start sampling from is ``result[steps.timesteps[0]]``.
    """
    latents: dict[int, torch.Tensor] = {}
    x = x0
    ascending = steps.timesteps[::-1]
    for i, t in enumerate(ascending):
        a_from, a_to = schedule.alpha(steps.prev(t)), schedule.alpha(t)
        eps = eps_fn(x, t)
        x0 = predict_x0(x, eps, a_from)
        x = ddim_update(x0, eps, a_to)
        latents[t] = x
        if callback is not None:
            callback(StepInfo(i, len(ascending), t, x, eps, x0))
    return latents


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: int, schedule: Schedule) -> torch.Tensor:
    """Forward process ``q(x_t | x0) = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` (``DDPMScheduler.add_noise``)."""
    a = schedule.alpha(t).to(x0.device, x0.dtype)
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def first_fraction(steps: Sequence[int], fraction: float) -> set[int]:
    """The first ``int(fraction * len(steps))`` timesteps of a descending list (PnP's tau thresholds)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return set(list(steps)[: int(fraction * len(steps))])
