"""Sampling a paired checkpoint: DDIM with classifier-free guidance for the DiT, one pass for pix2pix.

``load_paired(folder)`` reads a checkpoint folder (``checkpoint.py``) into a ``PairedModels`` bundle;
``translate(models, source)`` returns a ``TranslationResult`` like the editing methods do.
DDIM runs through ``dit_translate.diffusion.ddim`` (the project's one DDIM implementation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from dit_translate.diffusion.ddim import Schedule, ddim_sample, make_steps, output_to_eps, predict_x0
from dit_translate.encoders import ClipEncoder
from dit_translate.files import publish_folder
from dit_translate.methods.common import Progress, TranslationResult, check_range, step_reporter, timed
from dit_translate.paired.checkpoint import (
    META_FILE,
    CheckpointError,
    MODEL_DIR,
    SCHEDULER_DIR,
    checkpoint_defaults,
    read_meta,
    resolve_refs,
    write_checkpoint,
)
from dit_translate.paired.config import DiffusionSpec, PairedSpec
from dit_translate.paired.dit import PairedDiT
from dit_translate.paired.encoders import LatentCodec, fallback_encoders, load_clip_tower, load_dit_encoders, load_vae
from dit_translate.paired.pix2pix import UNetGenerator
from dit_translate.presets import Preset
from dit_translate.runtime import make_generator
from dit_translate.store import naming_bad_weights

log = logging.getLogger(__name__)

DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 3.0


def make_scheduler(spec: DiffusionSpec) -> DDIMScheduler:
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


def guided_eps(net: PairedDiT, cond: torch.Tensor, source: torch.Tensor | None, guidance: float,
               schedule: Schedule | None = None, prediction_type: str = "epsilon", clip_x0: bool = False):
    """``eps_fn(x, t)`` for DDIM: ``eps_u + w (eps_c - eps_u)``, both branches in one batch.

    ``guidance == 1`` is the conditional prediction alone (one network evaluation per step). A
    ``v_prediction`` or ``sample`` network's guided output is turned into the noise it implies (needs
    ``schedule``). With ``clip_x0`` (pixel space), the implied ``x0_hat`` is clamped to [-1, 1] and the
    noise re-derived from it, as ``DDIMScheduler(clip_sample=True)`` does.
    """
    if (clip_x0 or prediction_type != "epsilon") and schedule is None:
        raise ValueError("guided_eps needs the schedule to convert or clip the prediction")

    def eps_fn(x: torch.Tensor, t: int) -> torch.Tensor:
        b = x.shape[0]
        tt = torch.full((b,), t, device=x.device, dtype=torch.long)
        if guidance == 1:
            eps = net(x, tt, cond, source)
        else:
            keep = torch.arange(2 * b, device=x.device) < b
            both = net(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([cond, cond]),
                       None if source is None else torch.cat([source, source]), keep)
            eps_c, eps_u = both.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        if prediction_type == "epsilon" and not clip_x0:
            return eps
        a = schedule.alpha(t).to(x.device, x.dtype)
        eps = output_to_eps(eps, x, a, prediction_type)
        if not clip_x0:
            return eps
        x0 = predict_x0(x, eps, a).clamp(-1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_fn


@torch.no_grad()
def sample_dit(
    net: PairedDiT,
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
    """Translate ``sources`` (B, 3, H, W) in [-1, 1] -> (B, 3, H, W) in [-1, 1] by DDIM from pure noise
    (in pixel space with ``x0_hat`` clamped to the image range at every step)."""
    device, dtype = sources.device, next(net.parameters()).dtype
    cond = clip.embed_image(sources).to(dtype)
    source_latent = codec.encode(sources).to(dtype) if net.config.source_channels else None
    h, w = (s // codec.factor for s in sources.shape[-2:])
    x = randn_tensor((sources.shape[0], codec.channels, h, w), generator=generator, device=device, dtype=dtype)
    grid, schedule = make_steps(scheduler, steps), Schedule.from_scheduler(scheduler)
    eps_fn = guided_eps(net, cond, source_latent, guidance, schedule, scheduler.config.prediction_type,
                        clip_x0=codec.vae is None)
    z = ddim_sample(eps_fn, x, grid, schedule, eta, generator, step_reporter(progress, "translating"))
    return codec.decode(z).float().clamp(-1, 1)


@dataclass
class PairedModels:
    """A loaded paired checkpoint. ``image_size``: the side it was trained at (pixels)."""

    kind: str
    net: torch.nn.Module
    spec: PairedSpec
    image_size: int
    name: str
    step: int
    untrained: bool
    defaults: dict[str, Any]
    codec: LatentCodec | None = None
    clip: ClipEncoder | None = None
    scheduler: DDIMScheduler | None = None
    clip_untrained: bool = False
    folder: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def working_size(self) -> int:
        """The longer side translation fits images to: the checkpoint's ``size`` default, else its training size."""
        return int(self.defaults.get("size") or self.image_size)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor x patch, or the U-Net's 2 ** depth)."""
        if self.kind == "dit":
            return self.codec.factor * self.net.config.patch_size
        return 2**self.net.config.num_downs

    def nfe(self, steps: int, guidance: float) -> int:
        """Network evaluations per image (a guided DiT step counts 2)."""
        if self.kind != "dit":
            return 1
        return steps * (1 if guidance == 1 else 2)


def _load_net(cls: type[torch.nn.Module], folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The network of a checkpoint folder, from safetensors only (``CheckpointError`` otherwise); damaged
    weights are a ``CorruptWeightsError`` naming the file."""
    if not any((folder / MODEL_DIR).glob("*.safetensors")):
        raise CheckpointError(f"checkpoint {folder}: {MODEL_DIR}/ holds no safetensors weights; pickled weights "
                              "(.bin, .ckpt, .pt) are never loaded")
    with naming_bad_weights("the paired checkpoint", folder):  # a truncated or corrupt weights file
        return cls.from_pretrained(folder / MODEL_DIR, torch_dtype=dtype, use_safetensors=True)


def load_paired(folder: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                ) -> PairedModels:
    """Load a checkpoint folder (network, scheduler and encoders) onto ``device`` in eval mode."""
    folder = Path(folder).resolve()
    meta, spec = read_meta(folder)
    size = int(meta["image_size"])
    common = dict(kind=meta["kind"], spec=spec, image_size=size, name=str(meta["preset"]), step=int(meta["step"]),
                  untrained=bool(meta["untrained"]), defaults=meta.get("defaults", {}), folder=folder)
    if meta["kind"] == "pix2pix":
        net = _load_net(UNetGenerator, folder, dtype)
        return PairedModels(net=net.to(device).eval(), **common)
    enc = resolve_refs(meta["encoders"], folder)
    as_preset = Preset(name=str(meta["preset"]), kind="dit", model=str(folder), description=f"checkpoint {folder}",
                       size=size, source=folder / META_FILE, paired=spec)
    net = _load_net(PairedDiT, folder, dtype).to(device).eval()
    codec = LatentCodec(load_vae(enc["vae"], enc["vae_subfolder"])).to(device, dtype)
    clip = load_clip_tower(enc["clip"], as_preset, device)
    scheduler = DDIMScheduler.from_pretrained(folder / SCHEDULER_DIR)
    return PairedModels(net=net, codec=codec, clip=clip, scheduler=scheduler,
                        clip_untrained=bool(meta.get("clip_untrained", False)), **common)


def build_untrained(preset: Preset, root: Path) -> Path:
    """An UNTRAINED random DiT checkpoint folder for ``preset`` (its ``random-dit`` fallback), built once
    under ``root`` per preset configuration."""
    spec = preset.paired
    digest = hashlib.sha1(json.dumps([preset.size, spec.to_dict()], sort_keys=True).encode()).hexdigest()[:10]
    folder = root / f"{preset.name}-untrained-{digest}"
    if (folder / META_FILE).is_file():
        return folder
    log.warning("preset %r has no trained checkpoint: building an UNTRAINED random DiT at %s", preset.name, folder)
    spec = dataclasses.replace(spec, encoders=fallback_encoders(spec.encoders, preset))
    encoders = load_dit_encoders(spec.encoders, preset)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = PairedDiT.from_spec(spec.dit, encoders.codec.channels, encoders.cond_dim)
    return publish_folder(folder, lambda tmp: write_checkpoint(
        tmp, kind="dit", net=net, spec=spec, image_size=preset.size, step=0, preset=preset.name,
        defaults=checkpoint_defaults(preset), untrained=True, scheduler=make_scheduler(spec.diffusion),
        clip_spec=encoders.clip_spec, clip_untrained=encoders.clip_untrained))


def translate_batch(models: PairedModels, sources: torch.Tensor, *, steps: int, guidance: float,
                    generator: torch.Generator | None = None, progress: Progress | None = None) -> torch.Tensor:
    """Translate (B, 3, H, W) sources in [-1, 1] with either model kind -> (B, 3, H, W) in [-1, 1]."""
    sources = sources.to(models.device)
    if models.kind == "pix2pix":
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
    check_range("guidance", guidance, 0.0, 100.0)
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
