"""Stage 1: train the tiny ``AutoencoderKL`` on photos and their stylised versions.

Loss = MSE + L1 reconstruction + ``grad_weight`` * L1 of image gradients (sharp edges, cheap)
+ ``kl_weight`` * KL. Runs on ``accelerate.Accelerator`` (CPU here, unchanged under
``accelerate launch``); resumes exactly from ``<work>/checkpoint.safetensors``.

Stage 1b (``decoder_only``) fine-tunes the decoder of a trained VAE with its encoder frozen, as
Stability's ``sd-vae-ft-mse`` did: the latents stay bit-identical, so every model trained on them
keeps working, while the decoder learns from more varied images (``synthetic`` dead-leaves ones).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from dit_translate.paired.config import check_fields
from dit_translate.tiny.data import TinyDataset
from dit_translate.tiny.loop import TrainLoop
from dit_translate.tiny.models import VAE_CONFIG, make_vae

_VAE_RANGES = {"vae.steps": (1, 1000000000), "vae.batch_size": (1, 65536), "vae.lr": (1e-08, 1.0), "vae.warmup": (0, 1000000000), "vae.size": (8, 1024), "vae.crops_per_photo": (1, 1000000), "vae.save_every": (1, 1000000000), "vae.log_every": (1, 1000000000), "vae.decay_from": (0.0, 1.0), "vae.kl_weight": (0.0, 1000.0), "vae.l1_weight": (0.0, 1000.0), "vae.grad_weight": (0.0, 1000.0), "vae.synthetic": (0, 1000000)}
"""Bounds of the ``VAETrainConfig`` fields (``paired.config.check_fields``)."""


@dataclass(frozen=True)
class VAETrainConfig:
    steps: int = 4000
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 100
    decay_from: float = 0.4
    kl_weight: float = 1e-6
    l1_weight: float = 0.5
    grad_weight: float = 0.5
    size: int = 64
    crops_per_photo: int = 128
    recolor: bool = True
    seed: int = 0
    save_every: int = 250
    log_every: int = 10
    synthetic: int = 0
    decoder_only: bool = False
    model: dict = field(default_factory=lambda: dict(VAE_CONFIG))

    def __post_init__(self) -> None:
        check_fields(self, "vae", _VAE_RANGES)


DECODER_STAGE = "vae-decoder"  # stage 1b's folder under the build's work folder
# Stage 1b's recipe (ours): 4096 dead-leaves images beside 1536 photo crops, a gentler rate
DECODER_FINETUNE: dict = dict(lr=2e-4, warmup=50, decay_from=0.5, synthetic=4096, decoder_only=True)


def _grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance of horizontal and vertical finite differences of (B,C,H,W) images."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


class VAELoss(torch.nn.Module):
    """Wraps the VAE so that one ``forward`` (what DDP sees) computes the training loss."""

    def __init__(self, vae: AutoencoderKL, cfg: VAETrainConfig) -> None:
        super().__init__()
        self.vae, self.cfg = vae, cfg

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """x: (B,3,S,S) in [-1,1] -> dict of scalar losses ("loss" is the one to minimise)."""
        posterior = self.vae.encode(x).latent_dist
        recon = self.vae.decode(posterior.sample(generator=generator)).sample
        mse = F.mse_loss(recon, x)
        l1 = (recon - x).abs().mean()
        grad = _grad_l1(recon, x)
        kl = posterior.kl().mean()
        c = self.cfg
        loss = mse + c.l1_weight * l1 + c.grad_weight * grad + c.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # range [-1,1] -> peak 2
        return {"loss": loss, "mse": mse.detach(), "kl": kl.detach(), "psnr": psnr}


@torch.no_grad()
def latent_std(vae: AutoencoderKL, data: TinyDataset, n: int = 512, seed: int = 0) -> float:
    """Std of sampled latents over ``n`` training images (1/std is the VAE's scaling_factor)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n]
    zs = [
        vae.encode(data.batch(chunk, torch.zeros(len(chunk), dtype=torch.bool))[0]).latent_dist.sample(g)
        for chunk in idx.split(64)
    ]
    return torch.cat(zs).std().item()


def train_vae(work: str | Path, cfg: VAETrainConfig, data: TinyDataset | None = None,
              init: AutoencoderKL | None = None) -> AutoencoderKL:
    """Train (or resume) up to ``cfg.steps``; save the final model to ``<work>/final``.

    Starts from ``init`` when given, else from a new VAE of ``cfg.model``, whose ``scaling_factor`` is
    then set to 1/std of its latents on the training images. With ``cfg.decoder_only`` the trained VAE
    ``init`` is fine-tuned with its encoder and ``quant_conv`` frozen, so its latents and
    ``scaling_factor`` stay those of ``init``.
    """
    if cfg.decoder_only and init is None:
        raise ValueError("decoder_only fine-tunes a trained VAE: pass it as init")
    work = Path(work)
    data = data or TinyDataset("train", cfg.size, cfg.crops_per_photo, seed=cfg.seed, recolor=cfg.recolor,
                               synthetic=cfg.synthetic)
    torch.manual_seed(cfg.seed)
    vae = make_vae(**cfg.model) if init is None else init
    if cfg.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    module = VAELoss(vae, cfg)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)

    loop = TrainLoop(work, module, optimizer, cfg.steps, cfg.lr, cfg.warmup, cfg.seed,
                     cfg.save_every, cfg.log_every, config=asdict(cfg), desc="vae",
                     batch_size=cfg.batch_size, decay_from=cfg.decay_from)

    def step_fn(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(len(data), (cfg.batch_size,), generator=g)
        flip = torch.rand(cfg.batch_size, generator=g) < 0.5
        x, _ = data.batch(idx, flip)
        return model(x.to(loop.accelerator.device), g)

    loop.run(step_fn)
    if loop.accelerator.is_main_process:
        vae.eval()
        if init is None:
            vae.register_to_config(scaling_factor=1.0 / latent_std(vae, data, seed=cfg.seed))
        vae.save_pretrained(work / "final")
    loop.accelerator.wait_for_everyone()
    return vae
