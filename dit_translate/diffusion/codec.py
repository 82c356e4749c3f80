"""The one latent codec: images (B, 3, H, W) in [-1, 1] <-> the space a diffusion model works in.

A VAE's scaled latents (Stable Diffusion layout, ``z = scaling_factor * E(x)``), or the pixels
themselves for pixel-space models. The editing methods and the paired DiT both go through it.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor
from torch import nn


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
