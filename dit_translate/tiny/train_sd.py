"""Stage 2: train the tiny CLIP text encoder and text-conditional U-Net jointly on VAE latents.

Epsilon-prediction MSE under Stable Diffusion's DDPM schedule; captions are replaced by "" with
probability ``caption_dropout`` (for classifier-free guidance). The VAE is frozen: its latent
distributions over the training crops (and their mirror images) are computed once. EMA weights of
both trained models are kept and exported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from dit_translate.paired.config import check_fields
from dit_translate.tiny.data import TinyDataset
from dit_translate.tiny.loop import TrainLoop
from dit_translate.tiny.models import (
    TEXT_CONFIG,
    UNET_CONFIG,
    make_text_encoder,
    make_train_scheduler,
    make_unet,
)

_SD_RANGES = {"sd.steps": (1, 1000000000), "sd.batch_size": (1, 65536), "sd.lr": (1e-08, 1.0), "sd.warmup": (0, 1000000000), "sd.size": (8, 1024), "sd.crops_per_photo": (1, 1000000), "sd.save_every": (1, 1000000000), "sd.log_every": (1, 1000000000), "sd.caption_dropout": (0.0, 1.0), "sd.ema_decay": (0.0, 1.0)}
"""Bounds of the ``SDTrainConfig`` fields (``paired.config.check_fields``)."""


@dataclass(frozen=True)
class SDTrainConfig:
    steps: int = 8000
    batch_size: int = 32
    lr: float = 3e-4
    warmup: int = 200
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    size: int = 64
    crops_per_photo: int = 128
    seed: int = 0
    save_every: int = 200
    log_every: int = 20
    init: str = ""
    """An exported tiny SD folder whose text encoder and U-Net start this run ("" = from scratch): a later
    session continues training from the shipped weights (its optimizer state starts afresh)."""
    unet: dict = field(default_factory=lambda: dict(UNET_CONFIG))
    text: dict = field(default_factory=lambda: dict(TEXT_CONFIG))

    def __post_init__(self) -> None:
        check_fields(self, "sd", _SD_RANGES)


class NoisePrediction(torch.nn.Module):
    """Text encoder + U-Net; ``forward`` (what DDP sees) returns the epsilon-prediction loss."""

    def __init__(self, unet: UNet2DConditionModel, text_encoder: CLIPTextModel, scheduler: DDPMScheduler):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder
        self.scheduler = scheduler

    def forward(
        self, latents: torch.Tensor, input_ids: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """latents/noise: (B,4,h,w) (latents already scaled); input_ids: (B,77); timesteps: (B,)."""
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        hidden = self.text_encoder(input_ids).last_hidden_state
        eps = self.unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        return {"loss": F.mse_loss(eps, noise)}


@torch.no_grad()
def encode_bank(vae: AutoencoderKL, data: TinyDataset, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every training image, unflipped and flipped: each (2,N,4,h,w)."""
    means, stds = [], []
    for flipped in (False, True):
        m, s = [], []
        for idx in torch.arange(len(data)).split(chunk):
            x, _ = data.batch(idx, torch.full((len(idx),), flipped))
            dist = vae.encode(x).latent_dist
            m.append(dist.mean)
            s.append(dist.std)
        means.append(torch.cat(m))
        stds.append(torch.cat(s))
    return torch.stack(means), torch.stack(stds)


def init_from_folder(module: NoisePrediction, folder: str | Path) -> None:
    """Load the U-Net and text encoder weights of the diffusers folder ``folder`` into ``module``
    (strict: the architectures must match; the U-Net's ``sample_size`` may differ)."""
    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
    text = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True)
    module.unet.load_state_dict(unet.state_dict())
    module.text_encoder.load_state_dict(text.state_dict())


def tokenize(tokenizer: CLIPTokenizer, texts: list[str]) -> torch.Tensor:
    """Token ids (len(texts), 77), padded as Stable Diffusion pipelines pad prompts."""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def train_sd(
    work: str | Path,
    cfg: SDTrainConfig,
    vae: AutoencoderKL,
    tokenizer: CLIPTokenizer,
    data: TinyDataset,
) -> None:
    """Train (or resume) text encoder + U-Net up to ``cfg.steps`` with the frozen ``vae``.

    Weights (raw and EMA) live in ``<work>/checkpoint.safetensors``; see ``build.export``.
    """
    vae.eval().requires_grad_(False)
    mean, std = encode_bank(vae, data)
    scale = vae.config.scaling_factor
    captions = sorted(set(data.captions)) + [""]
    caption_ids = tokenize(tokenizer, captions)
    item_caption = torch.tensor([captions.index(c) for c in data.captions])
    empty = len(captions) - 1

    torch.manual_seed(cfg.seed)
    module = NoisePrediction(make_unet(**cfg.unet), make_text_encoder(**cfg.text), make_train_scheduler())
    if cfg.init:
        init_from_folder(module, cfg.init)
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=1e-2)
    loop = TrainLoop(work, module, optimizer, cfg.steps, cfg.lr, cfg.warmup, cfg.seed,
                     cfg.save_every, cfg.log_every, config=asdict(cfg), desc="unet+text",
                     batch_size=cfg.batch_size, ema_parameters=module.parameters(),
                     ema_decay=cfg.ema_decay)
    device = loop.accelerator.device

    def step_fn(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
        b = cfg.batch_size
        idx = torch.randint(len(data), (b,), generator=g)
        flip = (torch.rand(b, generator=g) < 0.5).long()
        latents = (mean[flip, idx] + std[flip, idx] * torch.randn((b, *mean.shape[2:]), generator=g)) * scale
        noise = torch.randn(latents.shape, generator=g)
        timesteps = torch.randint(0, module.scheduler.config.num_train_timesteps, (b,), generator=g)
        drop = torch.rand(b, generator=g) < cfg.caption_dropout
        ids = caption_ids[torch.where(drop, empty, item_caption[idx])]
        return model(latents.to(device), ids.to(device), noise.to(device), timesteps.to(device))

    loop.run(step_fn)
