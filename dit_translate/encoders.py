"""Guidance encoders: open_clip image/text towers and a DINO ViT, with differentiable preprocessing.

Images enter as (B, 3, H, W) float tensors in [-1, 1]; preprocessing (square centre crop, antialiased
resize, mean/std normalisation) is torch ops only, so losses backpropagate to the pixels. Loading them
by a preset's spec is ``dit_translate.guidance``'s job; this module needs only torch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dit_translate.files import replaced_folder

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---- differentiable preprocessing ----------------------------------------------------------------
def fit_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop (B, C, H, W) to a square and resize it to (B, C, size, size), antialiased and differentiable."""
    h, w = images.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = images[..., top : top + s, left : left + s]
    if s == size:
        return square
    return F.interpolate(square, size=(size, size), mode="bicubic", antialias=True, align_corners=False)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images in [-1, 1] -> ``((x + 1) / 2 - mean) / std`` per channel (what the encoders were trained on)."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return ((images + 1) / 2 - m) / s


# ---- encoders -----------------------------------------------------------------------------------
@dataclass
class ClipEncoder:
    """An open_clip model: unit-norm text embeddings (no grad) and image embeddings (differentiable)."""

    name: str
    model: torch.nn.Module
    tokenizer: Callable
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Callable, name: str) -> ClipEncoder:
        """Wrap a built open_clip model; size/mean/std come from its preprocess config."""
        from open_clip import get_model_preprocess_cfg

        cfg = get_model_preprocess_cfg(model)
        size = cfg.get("size", model.visual.image_size)
        size = size if isinstance(size, int) else size[0]
        model.eval().requires_grad_(False)
        return cls(name, model, tokenizer, int(size), tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], *, unit: bool = True) -> torch.Tensor:
        """Texts -> (N, D) unit-norm embeddings (raw features with ``unit=False``); texts longer than the
        context are truncated, with a warning."""
        self._warn_if_truncated(texts)
        tokens = self.tokenizer(list(texts)).to(self.device)
        features = self.model.encode_text(tokens).float()
        return F.normalize(features, dim=-1) if unit else features

    def _warn_if_truncated(self, texts: Sequence[str]) -> None:
        """Log one warning when open_clip's BPE tokenizer will cut a text to its context length."""
        limit, encode = getattr(self.tokenizer, "context_length", None), getattr(self.tokenizer, "encode", None)
        if limit is None or encode is None:  # tokenizers without a BPE ``encode`` (HF ones) are not inspected
            return
        longest = max((len(encode(t)) + 2 for t in texts), default=0)  # + start and end tokens
        if longest > limit:
            log.warning("text is %d tokens long; truncated to CLIP %s's %d", longest, self.name, limit)

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> (B, D) unit-norm embeddings, differentiable."""
        x = normalize(fit_square(images.float(), self.size), self.mean, self.std)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)


@dataclass
class DinoEncoder:
    """A timm ViT (DINO): the [CLS] token of its last layer, differentiable."""

    name: str
    model: torch.nn.Module
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_model(cls, model: torch.nn.Module, name: str) -> DinoEncoder:
        """Wrap a built timm ViT; size/mean/std come from its pretrained config."""
        cfg = model.pretrained_cfg
        model.eval().requires_grad_(False)
        return cls(name, model, int(cfg["input_size"][-1]), tuple(cfg.get("mean", IMAGENET_MEAN)),
                   tuple(cfg.get("std", IMAGENET_STD)))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def cls_token(self, images: torch.Tensor, *, pre_norm: bool = False) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> (B, D) [CLS] features after the final norm (DINO's own output), or
        with ``pre_norm`` the last block's output before it (what AGG's released ``extractor.py`` takes)."""
        x = normalize(fit_square(images.float(), self.size), self.mean, self.std)
        if not pre_norm:
            return self.model.forward_features(x)[:, 0]
        seen: list[torch.Tensor] = []
        hook = self.model.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            self.model.forward_features(x)
        finally:
            hook.remove()
        return seen[0][:, 0]


# ---- the open_clip local-dir layout ------------------------------------------------------------------
def save_clip(model: torch.nn.Module, config: dict, folder: str | Path, extra: dict | None = None) -> Path:
    """Write an ``open_clip.CLIP`` built from ``config`` in the ``local-dir`` layout (config JSON + safetensors).

    The folder is assembled next to ``folder`` and swapped in, so it is never half-written;
    ``extra`` (e.g. the training step) is stored in the config JSON.
    """
    from safetensors.torch import save_file

    preprocess = {"size": config["vision_cfg"]["image_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    meta = {"model_cfg": config, "preprocess_cfg": preprocess, **({"dit_translate": extra} if extra else {})}
    Path(folder).parent.mkdir(parents=True, exist_ok=True)
    with replaced_folder(folder) as tmp:
        tmp.mkdir()
        (tmp / "open_clip_config.json").write_text(json.dumps(meta, indent=2))
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  tmp / "open_clip_model.safetensors")
    return Path(folder)
