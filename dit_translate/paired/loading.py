"""Loading paired checkpoints: the frozen encoders a DiT works with, the network, and the UNTRAINED
stand-in a ``random-dit`` preset builds when its checkpoint is missing.

``load_paired(folder)`` reads a checkpoint folder (``checkpoint.py``) into a ``PairedModels`` bundle;
``resolve_paired_folder(preset)`` finds a paired preset's folder (or builds its stand-in).
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
from torch import nn

from dit_translate.diffusion.codec import LatentCodec
from dit_translate.encoders import ClipEncoder
from dit_translate.errors import CheckpointError, MissingWeightsError
from dit_translate.guidance import clip_source, load_clip_tower
from dit_translate.paired.checkpoint import (
    META_FILE,
    MODEL_DIR,
    SCHEDULER_DIR,
    checkpoint_defaults,
    read_meta,
    resolve_refs,
    write_checkpoint,
)
from dit_translate.paired.config import EncoderSpec, PairedSpec
from dit_translate.paired.dit import PairedDiT
from dit_translate.paired.pix2pix import UNetGenerator
from dit_translate.paired.sampling import make_noise_scheduler
from dit_translate.presets import Preset
from dit_translate.refs import is_local_ref, shown_path
from dit_translate.untrained import built_once, untrained_sd_folder
from dit_translate.weights import Availability, naming_bad_weights

log = logging.getLogger(__name__)


# ---- the frozen encoders ---------------------------------------------------------------------------
def load_vae(ref: str, subfolder: str = "") -> nn.Module | None:
    """A frozen ``AutoencoderKL`` from a hub id or local folder (safetensors only); ``""`` means pixel space."""
    if not ref:
        return None
    from diffusers import AutoencoderKL

    where = f"{ref}/{subfolder}" if subfolder else ref
    if is_local_ref(ref):
        if not (Path(ref) / subfolder / "config.json").is_file():
            raise MissingWeightsError(f"VAE folder {where} is missing or has no config.json")
        with naming_bad_weights("the VAE", Path(ref) / subfolder):
            return AutoencoderKL.from_pretrained(ref, subfolder=subfolder or None, use_safetensors=True)
    try:
        return AutoencoderKL.from_pretrained(ref, subfolder=subfolder or None, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"VAE {where!r} could not be loaded ({type(e).__name__}); if it is not in the Hugging Face cache, "
            f"run `hf download {ref}` where the network is available"
        ) from None


def fallback_encoders(spec: EncoderSpec, preset: Preset) -> EncoderSpec:
    """``spec`` for building a ``random-dit`` preset's UNTRAINED stand-in: a local VAE folder that is
    missing is replaced (loudly) by the VAE of the untrained random tiny pipeline; anything else is kept."""
    if preset.fallback != "random-dit" or not is_local_ref(spec.vae) or (
            Path(spec.vae) / spec.vae_subfolder / "config.json").is_file():
        return spec
    folder = untrained_sd_folder()
    log.warning("preset %r: VAE folder %s is missing: using the UNTRAINED random VAE of %s",
                preset.name, Path(spec.vae) / spec.vae_subfolder, folder)
    return dataclasses.replace(spec, vae=str(folder), vae_subfolder="vae")


@dataclass
class DiTEncoders:
    """The frozen encoders a DiT of a preset works with, and where its CLIP came from."""

    codec: LatentCodec
    clip: ClipEncoder
    clip_spec: str
    clip_untrained: bool

    @property
    def cond_dim(self) -> int:
        """Width of the CLIP image embeddings (768 for ViT-L/14)."""
        return int(self.clip.model.visual.output_dim)


def load_dit_encoders(spec: EncoderSpec, preset: Preset, device: torch.device | str = "cpu") -> DiTEncoders:
    """Load the VAE (or pixel space) and the CLIP tower of ``spec`` (a preset's ``[encoders]``) onto ``device``."""
    clip_spec, untrained = clip_source(spec.clip, preset)
    if untrained:
        log.warning("preset %r: using an UNTRAINED random CLIP (its folder is missing)", preset.name)
    codec = LatentCodec(load_vae(spec.vae, spec.vae_subfolder)).to(device)
    return DiTEncoders(codec, load_clip_tower(clip_spec, preset, device), clip_spec, untrained)


# ---- the loaded checkpoint ---------------------------------------------------------------------------
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
        raise CheckpointError(f"checkpoint {shown_path(folder)}: {MODEL_DIR}/ holds no safetensors weights; pickled weights "
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


# ---- finding a paired preset's checkpoint ----------------------------------------------------------
def is_paired_checkpoint(path: Path) -> bool:
    return (path / META_FILE).is_file()


def paired_availability(preset: Preset) -> Availability:
    """Can a paired preset's checkpoint load right now?"""
    path = Path(preset.model)
    if is_paired_checkpoint(path):
        return Availability(True, f"checkpoint folder {shown_path(path)}")
    if preset.fallback == "random-dit":
        return Availability(True, f"UNTRAINED random DiT (no trained checkpoint at {shown_path(path)})", untrained=True)
    return Availability(False, f"no trained checkpoint at {shown_path(path)}")


def resolve_paired_folder(preset: Preset) -> tuple[Path, bool]:
    """The checkpoint folder of a paired (``kind = "dit"``) preset and whether it is an untrained stand-in."""
    path = Path(preset.model)
    if is_paired_checkpoint(path):
        return path, False
    if preset.fallback == "random-dit":
        return build_untrained(preset), True
    raise MissingWeightsError(
        f"preset {preset.name!r}: no trained checkpoint at {shown_path(path)} (no paired.json); train one with "
        f"`python -m dit_translate train --config {shown_path(preset.source)} --data DIR --out {shown_path(path)}` or pass --checkpoint"
    )


def build_untrained(preset: Preset, root: Path | None = None) -> Path:
    """An UNTRAINED random DiT checkpoint folder for ``preset`` (its ``random-dit`` fallback), built once
    per preset configuration under ``root`` (default: ``untrained.UNTRAINED_CACHE``)."""
    spec = preset.paired
    digest = hashlib.sha1(json.dumps([preset.size, spec.to_dict()], sort_keys=True).encode()).hexdigest()[:10]

    def build(tmp: Path) -> None:
        full = dataclasses.replace(spec, encoders=fallback_encoders(spec.encoders, preset))
        encoders = load_dit_encoders(full.encoders, preset)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = PairedDiT.from_spec(full.dit, encoders.codec.channels, encoders.cond_dim)
        write_checkpoint(tmp, kind="dit", net=net, spec=full, image_size=preset.size, step=0, preset=preset.name,
                         defaults=checkpoint_defaults(preset), untrained=True,
                         scheduler=make_noise_scheduler(full.diffusion), clip_spec=encoders.clip_spec,
                         clip_untrained=encoders.clip_untrained)

    return built_once(f"{preset.name}-untrained-{digest}", build, f"a trained checkpoint of preset {preset.name!r}",
                      root)
