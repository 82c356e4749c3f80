"""Frozen encoders of the paired models: the latent codec (a VAE, or pixel space) and the CLIP image tower.

The CLIP tower is the project's ``dit_translate.encoders.ClipEncoder`` (open_clip, differentiable
preprocessing, unit-norm embeddings), named as in ``[guidance]``: ``"arch/pretrained-tag"`` or
``"local-dir:folder"``. Offline without cached weights, loading raises ``MissingWeightsError``
naming the preset and how to get the weights.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from dit_translate.encoders import ClipEncoder, build_random_clip, load_clip
from dit_translate.files import publish_folder
from dit_translate.paired.config import EncoderSpec, is_local_ref
from dit_translate.presets import LOCAL_DIR, GuidanceSpec, Preset
from dit_translate.store import UNTRAINED_CACHE, MissingWeightsError, naming_bad_weights, untrained_sd_folder

log = logging.getLogger(__name__)

UNTRAINED_CLIP = UNTRAINED_CACHE / "tiny-dit-clip-untrained"
"""Where the ``random-dit`` fallback builds its UNTRAINED random tiny CLIP (once per machine)."""


class LatentCodec(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] <-> the diffusion space: scaled VAE latents, or the pixels themselves.

    ``channels``: latent channels (3 in pixel space); ``factor``: spatial downsampling (1 in pixel space).
    """

    def __init__(self, vae: nn.Module | None = None) -> None:
        super().__init__()
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False).eval()
            self.scale = float(vae.config.scaling_factor)
            self.channels = int(vae.config.latent_channels)
            self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        else:
            self.scale, self.channels, self.factor = 1.0, 3, 1

    def train(self, mode: bool = True) -> LatentCodec:
        """The VAE stays in eval mode (it is frozen)."""
        return self

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scaled posterior ``(mean, std)``, each (B, C, H/f, W/f); in pixel space ``(images, 0)``."""
        if self.vae is None:
            return images, torch.zeros_like(images)
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return dist.mean * self.scale, dist.std * self.scale

    @staticmethod
    def sample(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A latent from posterior ``moments``: ``mean + std * noise`` with ``generator``, else the mode ``mean``
        (the draws of ``DiagonalGaussianDistribution.sample``)."""
        if generator is None:
            return mean
        return mean + std * randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents (B, C, H/f, W/f): a posterior sample with ``generator``, else the posterior mode."""
        if self.vae is None:
            return images
        return self.sample(*self.moments(images), generator)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W), nominally in [-1, 1] (not clamped, so gradients flow through)."""
        if self.vae is None:
            return latents
        return self.vae.decode(latents.to(self.vae.dtype) / self.scale).sample


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


def _has_clip(folder: Path) -> bool:
    return (folder / "open_clip_config.json").is_file() and any(folder.glob("*.safetensors"))


def _untrained_clip() -> Path:
    """The untrained random tiny CLIP folder, built on first use (atomic rename)."""
    if not _has_clip(UNTRAINED_CLIP):
        log.warning("building an UNTRAINED random tiny CLIP at %s (preset fallback 'random-dit')", UNTRAINED_CLIP)
        publish_folder(UNTRAINED_CLIP, lambda tmp: build_random_clip(tmp, seed=0))
    return UNTRAINED_CLIP


def clip_source(spec: str, preset: Preset) -> tuple[str, bool]:
    """The CLIP spec to load for ``preset`` and whether it is an UNTRAINED stand-in.

    A ``local-dir`` folder without weights is an error, unless the preset has ``fallback = "random-dit"``:
    then an untrained random tiny CLIP takes its place (loudly).
    """
    if not spec.startswith(LOCAL_DIR) or _has_clip(Path(spec[len(LOCAL_DIR):])):
        return spec, False
    if preset.fallback != "random-dit":
        raise MissingWeightsError(
            f"preset {preset.name!r}: CLIP folder {spec[len(LOCAL_DIR):]} is missing or holds no "
            "open_clip_config.json + safetensors weights; check the preset's [encoders] clip"
        )
    return LOCAL_DIR + str(_untrained_clip()), True


def load_clip_tower(spec: str, preset: Preset, device: torch.device | str = "cpu") -> ClipEncoder:
    """The frozen CLIP tower of an already resolved ``spec`` (see ``clip_source``) for ``preset``."""
    encoder, _ = load_clip(spec, dataclasses.replace(preset, guidance=GuidanceSpec(clip=(spec,))), device)
    return encoder


def load_feature_clip(spec: str, device: torch.device | str = "cpu") -> ClipEncoder:
    """A CLIP tower chosen for evaluation features (``eval --features``), by spec alone."""
    as_preset = Preset(name="eval --features", kind="dit", model=".", description="", size=256,
                       source=Path("eval"))
    return load_clip_tower(spec, as_preset, device)


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
