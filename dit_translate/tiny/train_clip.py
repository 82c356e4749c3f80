"""Stage 3: train the tiny open_clip model contrastively on the tiny world's image/caption pairs.

The model is ``open_clip.CLIP`` with ``encoders.TINY_CLIP_CONFIG`` (64 px ViT, CLIP's BPE vocabulary)
and is exported in open_clip's ``local-dir`` layout, so AGG's losses, the DiT's conditioning and the
metrics load it exactly as they load a hub CLIP. Captions repeat (one per photo and style), so the
contrastive loss treats every pair in a batch with the same caption as a positive (multi-positive
InfoNCE, both directions). With probability ``style_only`` a caption names only the style ("a comic
drawing"), which is how the held-out photos, whose content words the model never saw, are queried.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dit_translate.encoders import OPENAI_MEAN, OPENAI_STD, normalize, save_clip
from dit_translate.paired.config import check_fields
from dit_translate.tiny.data import STYLES, TinyDataset, style_caption
from dit_translate.tiny.loop import TrainLoop
from dit_translate.untrained import TINY_CLIP_CONFIG

_CLIP_RANGES = {"clip.steps": (1, 1000000000), "clip.batch_size": (1, 65536), "clip.lr": (1e-08, 1.0), "clip.warmup": (0, 1000000000), "clip.size": (8, 1024), "clip.crops_per_photo": (1, 1000000), "clip.save_every": (1, 1000000000), "clip.log_every": (1, 1000000000), "clip.style_only": (0.0, 1.0)}
"""Bounds of the ``CLIPTrainConfig`` fields (``paired.config.check_fields``)."""


@dataclass(frozen=True)
class CLIPTrainConfig:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 5e-4
    warmup: int = 100
    style_only: float = 0.3
    size: int = 64
    crops_per_photo: int = 48
    seed: int = 0
    save_every: int = 250
    log_every: int = 25
    model: dict = field(default_factory=lambda: json.loads(json.dumps(TINY_CLIP_CONFIG)))

    def __post_init__(self) -> None:
        check_fields(self, "clip", _CLIP_RANGES)


class Contrastive(torch.nn.Module):
    """open_clip model; ``forward`` returns the multi-positive contrastive loss and batch accuracy."""

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, caption_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B,3,S,S) in [-1,1]; tokens (B,77); caption_ids (B,) equal for equal captions."""
        img = F.normalize(self.clip.encode_image(normalize(images, OPENAI_MEAN, OPENAI_STD)), dim=-1)
        txt = F.normalize(self.clip.encode_text(tokens), dim=-1)
        logits = self.clip.logit_scale.exp() * img @ txt.T
        same = (caption_ids[:, None] == caption_ids[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        accuracy = (same.gather(1, logits.argmax(1, keepdim=True)) > 0).float().mean()
        return {"loss": loss, "accuracy": accuracy}


def training_data(cfg: CLIPTrainConfig) -> TinyDataset:
    """Training crops in their true colours plus as many randomly recoloured ones (a wider palette)."""
    plain = TinyDataset("train", cfg.size, cfg.crops_per_photo, seed=cfg.seed)
    recolored = TinyDataset("train", cfg.size, cfg.crops_per_photo, seed=cfg.seed + 1, recolor=True)
    plain.images = torch.cat([plain.images, recolored.images])
    plain.captions += recolored.captions
    plain.styles += recolored.styles
    plain.photo_names += recolored.photo_names
    return plain


def train_clip(work: str | Path, cfg: CLIPTrainConfig, data: TinyDataset) -> None:
    """Train (or resume) the tiny open_clip model up to ``cfg.steps``; weights in ``<work>/checkpoint``."""
    import open_clip

    captions = sorted(set(data.captions)) + [style_caption(s) for s in STYLES]
    tokens = open_clip.tokenize(captions)
    item_caption = torch.tensor([captions.index(c) for c in data.captions])
    item_style = torch.tensor([len(captions) - len(STYLES) + STYLES.index(s) for s in data.styles])

    torch.manual_seed(cfg.seed)
    module = Contrastive(open_clip.CLIP(**cfg.model))
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    loop = TrainLoop(work, module, optimizer, cfg.steps, cfg.lr, cfg.warmup, cfg.seed, cfg.save_every,
                     cfg.log_every, config=asdict(cfg), desc="clip", batch_size=cfg.batch_size,
                     ema_parameters=module.parameters(), ema_decay=0.995, decay_from=0.5)
    device = loop.accelerator.device

    def step_fn(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
        b = cfg.batch_size
        idx = torch.randint(len(data), (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        style_only = torch.rand(b, generator=g) < cfg.style_only
        images, _ = data.batch(idx, flip)
        ids = torch.where(style_only, item_style[idx], item_caption[idx])
        return model(images.to(device), tokens[ids].to(device), ids.to(device))

    loop.run(step_fn)


def export_clip(work: str | Path, out: str | Path, ema: bool = True) -> Path:
    """Write the latest checkpoint's (EMA) weights to ``out`` in open_clip's ``local-dir`` layout."""
    import open_clip

    from dit_translate.tiny.checkpoint import load_weights

    work = Path(work)
    cfg = json.loads((work / "train_config.json").read_text())
    module = Contrastive(open_clip.CLIP(**cfg["model"]))
    step = load_weights(work / "checkpoint.safetensors", module, ema=ema)
    return save_clip(module.clip, cfg["model"], out, extra={"training_step": step, "ema": ema})
