"""Asymmetric Gradient Guidance, AGG (Kwon & Ye, arXiv 2306.04396; docs/methods.md §5).

1. Deterministic DDIM inversion of the source (empty prompt, no CFG) over the last ``1 - skip`` of
   the ``steps`` grid, storing the Tweedie estimate x0_inv[t] at every timestep.
2. Reverse DDIM from the inverted latent, in three windows (the official index rule, see
   ``agg_phases``):

   * **edit** (eta_edit): one MCG step through the U-Net (``x0' = x0 - (1 - a)/sqrt(a) grad_{x_t} L``),
     then a cheap refinement of a bias on x0' with AdamW that never backpropagates through the U-Net,
     then the *asymmetric* update ``ddim_update(x0'', eps_unguided)``;
   * **middle**: plain DDIM (eta); **last**: plain DDIM with eta_boost (1.0, DDPM-like).

The loss ``L`` is the style loss (``losses.StyleLoss``) plus the range loss on the decoded estimate
plus the structure regulariser (L1 to x0_inv[t] in model space: latents for Stable Diffusion, pixels
for pixel models). Latent models are scored on the VAE-decoded x0 estimate (docs/methods.md §5.7, [I]);
pixel models on DiffuseIT's noise-mixed estimate (``losses.noise_mix``).

``AGGConfig`` holds the knobs; its switches give the ablations and baselines: ``symmetric=True``
(guided eps too), ``mcg=False`` (no U-Net gradient), ``regularizer=False``, ``refine="none"`` (MCG only),
``refine="mcg"`` (every refinement iteration is another MCG step through the U-Net: the DiffuseIT-style
baseline). ``ddim_baseline`` is the unguided DDIM run with the same windows and noise. ``agg`` is the
sampler: inversion, then ``agg_step`` in the edit window and plain DDIM elsewhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from dit_translate.diffusion.ddim import (
    EpsFn,
    Steps,
    ddim_sigma,
    ddim_update,
    output_to_eps,
    predict_x0,
)
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.knobs import check, check_int, check_range
from dit_translate.methods.agg_inversion import invert_with_x0, invert_with_x0_adm
from dit_translate.methods.common import (
    Progress,
    TranslationResult,
    timed,
)
from dit_translate.methods.losses import (
    ClipGuidanceLoss,
    ProgressiveClip,
    StyleLoss,
    noise_mix,
    range_loss,
    structure_loss,
)
from dit_translate.runtime import make_generator

REFINE = ("dds", "mcg", "none")
REFINE_OUTPUTS = ("updated", "pre-step")
INVERSIONS = ("diffusers", "adm")
REFERENCE_NUMEL = 3 * 256 * 256
"""Elements of one sample in the official setting (ADM, 256x256 pixels), where the loss weights were tuned."""
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``objective(x0, x_t) -> loss``: AGG's loss of a model-space x0 estimate at the current ``x_t``."""




@dataclass(frozen=True)
class AGGConfig:
    """AGG's knobs, validated on construction. ``steps`` is the respaced grid (``skip`` of it is skipped);
    window fractions, etas, AdamW ``lr``, ``inner_steps`` (K) and loss weights are AGG's defaults.

    ``mcg_scale`` multiplies the MCG step ``(1 - a)/sqrt(a) grad``; ``None`` [I] uses ``numel(decoded image)
    / REFERENCE_NUMEL`` (per sample): the losses are means over the decoded image, so their gradients shrink
    as 1/numel of that image, and the weights (200) were tuned at 256x256 pixels; the factor keeps the step
    the same at every resolution (exactly the paper's formula for 256x256 pixel models). The AdamW
    refinement is scale-free and needs no such factor. ``mix=None`` means noise-mixed scoring for pixel
    models, plain decoded x0 for latent ones.

    The released code's behaviours are switches (``variant_config("released")`` sets them):
    ``refine_output="pre-step"`` returns the refined estimate computed before the last AdamW step (as
    ``cond_fn_dds`` does: at K = 1 the refinement then changes nothing); ``adaptive_clip`` is its text runs'
    ``--use_prog_contrast --regularize_content`` (the MCG step's CLIP weight doubled while the last CLIP
    loss is above -0.5, halved below); ``inversion="adm"`` its inversion (epsilon at the source level,
    starting at the grid's first timestep, x0_inv[t] = x0_hat(x_t^inv)) instead of diffusers' convention.
    """

    steps: int = 50
    skip: float = 0.4
    edit: float = 0.2
    boost: float = 0.2
    eta_edit: float = 0.7
    eta: float = 0.7
    eta_boost: float = 1.0
    mcg: bool = True
    mcg_scale: float | None = None
    refine: str = "dds"
    inner_steps: int = 1
    lr: float = 0.02
    regularizer: bool = True
    reg_weight: float = 200.0
    range_weight: float = 200.0
    symmetric: bool = False
    mix: bool | None = None
    refine_output: str = "updated"
    adaptive_clip: bool = False
    inversion: str = "diffusers"

    def __post_init__(self) -> None:
        for name, allowed in (("refine", REFINE), ("refine_output", REFINE_OUTPUTS), ("inversion", INVERSIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("skip", "edit", "boost", "eta_edit", "eta", "eta_boost"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        check_range("lr", self.lr, 0.0, 1.0, low_open=True)
        check_range("reg_weight", self.reg_weight, 0.0, 1e6)
        check_range("range_weight", self.range_weight, 0.0, 1e6)
        if self.mcg_scale is not None:
            check_range("mcg_scale", self.mcg_scale, 0.0, 1e6)
        object.__setattr__(self, "inner_steps", check_int("inner_steps", self.inner_steps, 1))

    @property
    def guided(self) -> bool:
        """Whether the edit window is guided at all (else this is unguided DDIM)."""
        return self.mcg or self.refine != "none"

    def unguided(self) -> AGGConfig:
        """The same windows, etas and grid without guidance: AGG's DDIM baseline."""
        return dataclasses.replace(self, mcg=False, refine="none")


def min_steps_for_edit(skip: float = 0.4, edit: float = 0.2, boost: float = 0.2) -> int:
    """The smallest grid whose edit window holds at least one step (8 at AGG's fractions)."""
    for n in range(1, 1001):
        if round(skip * n) < n and "edit" in agg_phases(n, skip, edit, boost):
            return n
    raise ValueError(f"no grid of at most 1000 steps has an edit window with skip {skip}, edit {edit}")


@dataclass(frozen=True)
class AGGStep:
    """What ``agg`` reports to its ``trace`` after reverse step ``i`` at timestep ``t``: its window, the new
    ``x``, the regulariser's target ``x0_inv`` and, for guided edit steps, the losses (``mcg``, ``refine``)."""

    i: int
    t: int
    phase: str
    x: torch.Tensor
    x0_inv: torch.Tensor
    losses: dict | None = None


def agg_phases(num_steps: int, skip: float = 0.4, edit: float = 0.2, boost: float = 0.2) -> tuple[str, ...]:
    """The window ("edit", "middle" or "last") of each reverse step that runs on a ``num_steps`` grid.

    The first ``round(skip * N)`` grid steps are skipped; with ``i`` counting the remaining steps
    down to 0, step ``i`` edits while ``i > N - round(skip * N) - round(edit * N)`` and is in the last
    window once ``i <= round(boost * N)`` (official: N = 100, skip 40, t_edit 20, boost at 20 -> 19
    edit, 20 middle and 21 last steps).
    """
    run = num_steps - round(skip * num_steps)
    if run < 1:
        raise ValueError(f"skip {skip} with {num_steps} steps leaves no step to run; lower skip or raise steps")
    edit_above = run - round(edit * num_steps)
    last_from = round(boost * num_steps)
    indices = range(run - 1, -1, -1)
    return tuple("edit" if i > edit_above else "last" if i <= last_from else "middle" for i in indices)


def guided_update(
    x_t: torch.Tensor,
    x0: torch.Tensor,
    eps: torch.Tensor,
    alpha: torch.Tensor,
    alpha_prev: torch.Tensor,
    sigma: torch.Tensor | float = 0.0,
    noise: torch.Tensor | None = None,
    *,
    symmetric: bool = False,
) -> torch.Tensor:
    """DDIM update from a guided ``x0``.

    Asymmetric (AGG): ``sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z`` with the *unguided*
    ``eps``. Symmetric (ablation): ``eps`` is replaced by the one consistent with the guided ``x0``.
    """
    if symmetric:
        eps = output_to_eps(x0, x_t, alpha, "sample")
    return ddim_update(x0, eps, alpha_prev, sigma, noise)


def mcg_step(
    eps_fn: EpsFn,
    x_t: torch.Tensor,
    t: int,
    alpha: torch.Tensor,
    objective: Objective,
    *,
    scale: float = 1.0,
    at: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One manifold-constrained gradient step through the U-Net.

    Returns ``(x0 - scale (1 - a)/sqrt(a) grad_{x_t} L, eps, L)`` with ``x0 = x0_hat(x_t)`` and the
    (detached) unguided ``eps``. With ``at`` (a refined estimate), the loss is evaluated at ``at`` and
    its gradient is pulled back through ``x0_hat(x_t)``; the step then starts from ``at``.
    """
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        eps = eps_fn(x, t)
        x0 = predict_x0(x, eps, alpha)
        point = x0 if at is None else x0 + (at - x0).detach()
        loss = objective(point, x)
        (grad,) = torch.autograd.grad(loss, x)
    start = x0.detach() if at is None else at
    return start - scale * (1 - alpha) / alpha**0.5 * grad, eps.detach(), loss.item()


def refine_bias(
    x0: torch.Tensor, x_t: torch.Tensor, objective: Objective, *, lr: float = 0.02, iters: int = 1, init: float = 1e-8,
    pre_step: bool = False,
) -> tuple[torch.Tensor, list[float]]:
    """AGG's cheap refinement: AdamW on a bias ``b`` (init ``init``) minimising ``L(x0 + b)``; returns
    ``x0 + b`` after ``iters`` steps and the loss of each iteration. With ``pre_step`` it returns, as the
    released ``cond_fn_dds``, the ``x0 + b`` the last iteration scored, i.e. before its step (``iters - 1``
    updates: none at all for one iteration). Nothing here calls the U-Net."""
    bias = torch.full_like(x0, init, requires_grad=True)
    optimizer = torch.optim.AdamW([bias], lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(iters):
            optimizer.zero_grad(set_to_none=True)
            point = x0.detach() + bias
            loss = objective(point, x_t.detach())
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return (point if pre_step else x0 + bias).detach(), losses


def make_objective(
    models: DiffusionModels,
    style: StyleLoss,
    x0_ref: torch.Tensor,
    alpha: torch.Tensor,
    *,
    reg_weight: float = 200.0,
    range_weight: float = 200.0,
    mix: bool = False,
    generator: torch.Generator | None = None,
) -> Objective:
    """AGG's loss at one step: ``style(decode(x0)) + range_weight * range + reg_weight * |x0 - x0_ref|_1``.

    ``mix`` scores the noise-mixed estimate (pixel models only: it mixes with ``x_t``).
    """

    def objective(x0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        images = models.decode(x0).float()
        loss = style(noise_mix(images, x_t.float(), alpha) if mix else images, generator)
        loss = loss + range_weight * range_loss(images)
        if reg_weight:
            loss = loss + reg_weight * structure_loss(x0.float(), x0_ref.float())
        return loss

    return objective


def agg_step(
    eps_fn: EpsFn, x_t: torch.Tensor, t: int, alpha: torch.Tensor, alpha_prev: torch.Tensor, sigma: torch.Tensor,
    noise: torch.Tensor | None, objective: Objective, config: AGGConfig, scale: float,
    refine_objective: Objective | None = None,
) -> tuple[torch.Tensor, dict]:
    """One guided edit step: MCG (optional), the refinement (``refine_objective``, default ``objective``), then
    the asymmetric (or symmetric) DDIM update -> ``(x_prev, record)``, the record holding the losses and the
    number of U-Net backward passes."""
    refine_objective = objective if refine_objective is None else refine_objective
    record: dict = {"unet_backwards": 0}
    if config.mcg:
        x0, eps, record["mcg"] = mcg_step(eps_fn, x_t, t, alpha, objective, scale=scale)
        record["unet_backwards"] += 1
    else:
        eps = eps_fn(x_t, t)
        x0 = predict_x0(x_t, eps, alpha)
    if config.refine == "dds":
        x0, record["refine"] = refine_bias(x0, x_t, refine_objective, lr=config.lr, iters=config.inner_steps,
                                           pre_step=config.refine_output == "pre-step")
    elif config.refine == "mcg":
        record["refine"] = []
        for _ in range(config.inner_steps):
            x0, _, loss = mcg_step(eps_fn, x_t, t, alpha, refine_objective, scale=scale, at=x0)
            record["refine"].append(loss)
            record["unet_backwards"] += 1
    return guided_update(x_t, x0, eps, alpha, alpha_prev, sigma, noise, symmetric=config.symmetric), record


def agg(
    models: DiffusionModels,
    image: torch.Tensor,
    style: StyleLoss | None,
    config: AGGConfig = AGGConfig(),
    *,
    prompt: str = "",
    negative_prompt: str = "",
    guidance: float = 1.0,
    seed: int = 0,
    progress: Progress | None = None,
    trace: Callable[[AGGStep], None] | None = None,
) -> TranslationResult:
    """Translate ``image`` (1, 3, H, W) in [-1, 1] by minimising ``style`` during the edit window.

    ``prompt``/``guidance`` condition the U-Net of text models (CFG); pixel models ignore them. ``seed``
    drives the DDIM noise and the augmentations, so equal seeds give equal noise across configs.
    """
    check("guidance", guidance)
    mix = not models.is_latent if config.mix is None else config.mix
    if mix and models.is_latent:
        raise ValueError("mix=True (noise-mixed scoring) needs a pixel model: latents cannot be mixed with images")
    if config.guided and style is None:
        raise ValueError("guided AGG needs a style loss")
    grid = models.steps(config.steps)
    phases = agg_phases(len(grid), config.skip, config.edit, config.boost)
    if config.guided and "edit" not in phases:
        raise ValueError(
            f"{config.steps} steps leave AGG's edit window (skip {config.skip}, edit {config.edit}) empty: the result "
            f"would be the unguided baseline; use at least {min_steps_for_edit(config.skip, config.edit, config.boost)} "
            "steps (AGG's own grid is 100)")
    run = Steps(grid.timesteps[len(grid) - len(phases):], grid.stride)
    etas = {"edit": config.eta_edit, "middle": config.eta, "last": config.eta_boost}
    reg_weight = config.reg_weight if config.regularizer else 0.0
    with torch.no_grad(), timed() as elapsed:
        noise_gen, aug_gen = make_generator(seed, models.device), make_generator(seed)
        denoiser = models.denoiser()
        cond = models.condition(prompt, negative_prompt, guidance)
        invert = invert_with_x0_adm if config.inversion == "adm" else invert_with_x0
        x, x0_inv = invert(denoiser, models.encode(image), run, models.empty_condition(), progress)
        scale = image[0].numel() / REFERENCE_NUMEL if config.mcg_scale is None else config.mcg_scale
        mcg_style = refine_style = style
        if config.adaptive_clip and isinstance(style, ClipGuidanceLoss):
            progressive = ProgressiveClip(style, -float(style.similarity(image.to(models.device), crops=0)))
            mcg_style, refine_style = progressive.mcg, progressive.refine

        def eps_fn(x_t: torch.Tensor, t: int) -> torch.Tensor:
            return denoiser(x_t, t, cond, guidance)

        backwards = 0
        for i, (t, phase) in enumerate(zip(run.timesteps, phases)):
            a, a_prev = denoiser.schedule.alpha(t), denoiser.schedule.alpha(run.prev(t))
            sigma = ddim_sigma(a, a_prev, etas[phase])
            noise = randn_tensor(x.shape, generator=noise_gen, device=x.device, dtype=x.dtype) if etas[phase] else None
            record = None
            if phase == "edit" and config.guided:
                objective, refine_objective = (
                    make_objective(models, loss, x0_inv[t], a, reg_weight=reg_weight,
                                   range_weight=config.range_weight, mix=mix, generator=aug_gen)
                    for loss in (mcg_style, refine_style))
                x, record = agg_step(eps_fn, x, t, a, a_prev, sigma, noise, objective, config, scale,
                                     refine_objective)
                backwards += record.pop("unet_backwards")
            else:
                eps = eps_fn(x, t)
                x = ddim_update(predict_x0(x, eps, a), eps, a_prev, sigma, noise)
            if trace is not None:
                trace(AGGStep(i, t, phase, x, x0_inv[t], record))
            if progress is not None:
                progress(i + 1, len(run), "guided denoising" if config.guided else "denoising")
        out = models.decode(x).float().cpu()
        seconds = elapsed()
    edit_steps = phases.count("edit") if config.guided else 0
    return TranslationResult("agg" if config.guided else "ddim", out, seconds, denoiser.nfe, extras={
        "steps_run": len(run), "start_timestep": run.timesteps[0], "inversion_steps": len(run),
        "edit_steps": edit_steps, "unet_backwards": backwards})


def ddim_baseline(models: DiffusionModels, image: torch.Tensor, config: AGGConfig = AGGConfig(),
                  **kwargs) -> TranslationResult:
    """AGG's unguided baseline: the same inversion, windows, etas and noise, with no guidance at all."""
    return agg(models, image, None, config.unguided(), **kwargs)
