"""Guidance encoders: open_clip image/text towers and a DINO ViT, with differentiable preprocessing.

Images enter as (B, 3, H, W) float tensors in [-1, 1]; preprocessing (square centre crop, antialiased
resize, mean/std normalisation) is torch ops only, so losses backpropagate to the pixels.

Models are named as in a preset's ``[guidance]`` table (``presets.GuidanceSpec``):

* open_clip ``"arch/pretrained-tag"`` (weights from the Hugging Face Hub or its cache, safetensors
  preferred, never remote code) or ``"local-dir:/folder"`` (open_clip's ``open_clip_config.json`` +
  ``open_clip_model.safetensors`` layout);
* timm ``"arch.tag"`` (``timm.create_model(id, pretrained=True)``) or ``"local-dir:/folder"``
  (timm's ``config.json`` + ``model.safetensors`` layout).

Offline without the weights, loading raises ``store.MissingWeightsError`` naming the preset, the
id and how to fetch it. With ``fallback = "random-tiny"``, missing ``local-dir`` folders are
replaced by UNTRAINED random tiny models built once into ``~/.cache/dit-translate``.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dit_translate.files import publish_folder
from dit_translate.presets import LOCAL_DIR, GuidanceSpec, Preset
from dit_translate.runtime import hub_offline
from dit_translate.store import UNTRAINED_CACHE, Availability, MissingWeightsError, naming_bad_weights

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""A 3.4 M-parameter open_clip config (64 px images, CLIP's BPE vocabulary): the untrained tiny fallback."""

TINY_DINO_ARGS = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 0}
"""A 0.1 M-parameter timm ViT (``vit_tiny_patch16_224`` resized): the untrained tiny DINO fallback."""


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
    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (N, D) unit-norm embeddings; texts longer than the context are truncated, with a warning."""
        self._warn_if_truncated(texts)
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

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

    def cls_token(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> (B, D) [CLS] features after the final norm (DINO's own output)."""
        x = normalize(fit_square(images.float(), self.size), self.mean, self.std)
        return self.model.forward_features(x)[:, 0]


# ---- untrained tiny fallbacks --------------------------------------------------------------------
def save_clip(model: torch.nn.Module, config: dict, folder: str | Path, extra: dict | None = None) -> Path:
    """Write an ``open_clip.CLIP`` built from ``config`` in the ``local-dir`` layout (config JSON + safetensors).

    The folder is written next to ``folder`` and renamed into place, so it is never half-written;
    ``extra`` (e.g. the training step) is stored in the config JSON.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    preprocess = {"size": config["vision_cfg"]["image_size"], "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD)}
    meta = {"model_cfg": config, "preprocess_cfg": preprocess, **({"dit_translate": extra} if extra else {})}
    (tmp / "open_clip_config.json").write_text(json.dumps(meta, indent=2))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp / "open_clip_model.safetensors")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def build_random_clip(folder: str | Path, seed: int = 0, config: dict | None = None) -> Path:
    """Write a random-init open_clip model in the ``local-dir`` layout (config JSON + safetensors)."""
    import open_clip

    config = config or TINY_CLIP_CONFIG
    torch.manual_seed(seed)
    return save_clip(open_clip.CLIP(**config), config, folder)


def build_random_dino(folder: str | Path, seed: int = 0, model_args: dict | None = None) -> Path:
    """Write a random-init timm ViT with DINO's preprocessing in timm's ``local-dir`` layout."""
    import timm
    from timm.models import save_for_hf

    folder = Path(folder)
    model_args = model_args or TINY_DINO_ARGS
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **model_args)
    size = model_args["img_size"]
    cfg = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input_size": [3, size, size], "tag": "untrained"}
    save_for_hf(model, str(folder), model_config={"pretrained_cfg": cfg}, model_args=model_args, safe_serialization=True)
    return folder


def _built_once(name: str, builder: Callable[[Path], Path]) -> Path:
    """``UNTRAINED_CACHE / name``, built by ``builder`` on first use (atomic rename, safe across processes)."""
    folder = UNTRAINED_CACHE / name
    if not folder.is_dir():
        log.warning("tiny guidance weights not found: building an UNTRAINED random model at %s", folder)
        publish_folder(folder, builder)
    return folder


# ---- resolving preset specs ----------------------------------------------------------------------
def _has_weights(folder: Path, config: str) -> bool:
    return (folder / config).is_file() and any(folder.glob("*.safetensors"))


def _local(spec: str, kind: str, preset: Preset) -> tuple[Path, bool]:
    """The folder of a ``local-dir:`` spec, or the untrained fallback; and whether it is untrained."""
    folder = Path(spec[len(LOCAL_DIR):])
    config = "open_clip_config.json" if kind == "clip" else "config.json"
    if _has_weights(folder, config):
        return folder, False
    if preset.guidance is not None and preset.guidance.fallback == "random-tiny":
        builder = build_random_clip if kind == "clip" else build_random_dino
        return _built_once(f"tiny-{kind}-untrained", builder), True
    raise MissingWeightsError(
        f"preset {preset.name!r}: guidance {kind} folder {folder} is missing or holds no {config} + "
        f"safetensors weights; check the preset's [guidance] table"
    )


def _clip_repo(spec: str) -> str:
    """The Hub repo holding the weights of an open_clip ``"arch/tag"`` spec; ValueError if unknown."""
    import open_clip

    arch, _, tag = spec.partition("/")
    if arch not in open_clip.list_models():
        raise ValueError(f"unknown open_clip architecture {arch!r} in guidance model {spec!r}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch))
        raise ValueError(f"unknown open_clip pretrained tag {tag!r} for {arch}; known tags: {tags}")
    if not cfg.get("hf_hub"):
        raise ValueError(f"open_clip weights {spec!r} are not on the Hugging Face Hub; pick a tag that is")
    return cfg["hf_hub"].rstrip("/")


def _dino_repo(spec: str) -> str:
    """The Hub repo holding the weights of a timm ``"arch.tag"`` spec; ValueError if unknown."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(spec)
    except RuntimeError as e:  # a known architecture with an unknown tag
        raise ValueError(f"guidance model {spec!r}: {e}") from None
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"unknown timm model {spec!r} (or it has no Hugging Face Hub weights)")
    return cfg.hf_hub_id


def _cached(repo: str, filenames: Sequence[str]) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in filenames)


_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")


def _missing(preset: Preset, spec: str, repo: str, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"preset {preset.name!r} needs guidance model {spec!r} ({repo}), which {why}: download it where the "
        f"network is available with `hf download {repo}` (it then loads from the Hugging Face cache)"
    )


def load_clip(spec: str, preset: Preset, device: torch.device | str = "cpu") -> tuple[ClipEncoder, bool]:
    """Load one open_clip spec of ``preset``; returns the encoder and whether it is the untrained fallback."""
    import open_clip

    if spec.startswith(LOCAL_DIR):
        folder, untrained = _local(spec, "clip", preset)
        name = LOCAL_DIR + str(folder)
        with naming_bad_weights(f"guidance CLIP of preset {preset.name!r}", folder):
            model = open_clip.create_model(name, device=device, weights_only=True)
        return ClipEncoder.from_model(model, open_clip.get_tokenizer(name), spec), untrained
    repo = _clip_repo(spec)
    arch, _, tag = spec.partition("/")
    if hub_offline() and not _cached(repo, _CLIP_FILES):
        raise _missing(preset, spec, repo, "is not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it")
    try:
        model = open_clip.create_model(arch, pretrained=tag, device=device, weights_only=True)
    except RuntimeError as e:
        raise _missing(preset, spec, repo, f"could not be loaded ({e})") from None
    return ClipEncoder.from_model(model, open_clip.get_tokenizer(arch), spec), False


def load_dino(spec: str, preset: Preset, device: torch.device | str = "cpu") -> tuple[DinoEncoder, bool]:
    """Load the timm DINO spec of ``preset``; returns the encoder and whether it is the untrained fallback."""
    import timm

    if spec.startswith(LOCAL_DIR):
        folder, untrained = _local(spec, "dino", preset)
        with naming_bad_weights(f"guidance DINO of preset {preset.name!r}", folder):
            model = timm.create_model(LOCAL_DIR + str(folder), pretrained=True)
        return DinoEncoder.from_model(model.to(device), spec), untrained
    repo = _dino_repo(spec)
    if hub_offline() and not _cached(repo, _TIMM_FILES):
        raise _missing(preset, spec, repo, "is not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it")
    try:
        model = timm.create_model(spec, pretrained=True, num_classes=0)
    except (OSError, RuntimeError) as e:  # huggingface_hub's not-found errors are OSErrors
        raise _missing(preset, spec, repo, f"could not be loaded ({type(e).__name__}: {e})") from None
    return DinoEncoder.from_model(model.to(device), spec), False


def _spec_status(spec: str, kind: str, preset: Preset) -> Availability:
    """Whether one guidance spec loads now (short label), without touching the network."""
    if spec.startswith(LOCAL_DIR):
        folder = Path(spec[len(LOCAL_DIR):])
        if _has_weights(folder, "open_clip_config.json" if kind == "clip" else "config.json"):
            return Availability(True, f"{kind} {folder}")
        if preset.guidance is not None and preset.guidance.fallback:
            return Availability(True, f"UNTRAINED random tiny {kind}", untrained=True)
        return Availability(False, f"{kind} folder {folder} missing")
    try:
        repo = _clip_repo(spec) if kind == "clip" else _dino_repo(spec)
    except ValueError as e:
        return Availability(False, str(e))
    if _cached(repo, _CLIP_FILES if kind == "clip" else _TIMM_FILES):
        return Availability(True, f"{kind} {spec} cached")
    if hub_offline():
        return Availability(False, f"{kind} {spec} not cached")
    return Availability(True, f"{kind} {spec} downloads on first use")


def guidance_availability(preset: Preset) -> Availability:
    """Can ``preset``'s guidance models load right now? Never touches the network."""
    if preset.guidance is None:
        return Availability(False, "no [guidance] table")
    spec = preset.guidance
    status = [_spec_status(s, "clip", preset) for s in spec.clip]
    if spec.dino is not None:
        status.append(_spec_status(spec.dino, "dino", preset))
    return Availability(all(a.ok for a in status), ", ".join(a.detail for a in status),
                        untrained=any(a.untrained for a in status))


# ---- the per-preset bundle -----------------------------------------------------------------------
class Guidance:
    """The guidance models of one preset, each loaded on first use and then kept (see ``ModelStore.guidance``)."""

    def __init__(self, preset: Preset, device: torch.device | str = "cpu") -> None:
        if preset.guidance is None:
            raise ValueError(f"preset {preset.name!r} has no [guidance] table naming CLIP/DINO guidance models")
        self.preset = preset
        self.spec: GuidanceSpec = preset.guidance
        self.device = torch.device(device)
        self.untrained: set[str] = set()
        self._clips: tuple[ClipEncoder, ...] | None = None
        self._dino: DinoEncoder | None = None
        self._lock = threading.Lock()

    def clips(self) -> tuple[ClipEncoder, ...]:
        """The CLIP ensemble (text guidance)."""
        with self._lock:
            if self._clips is None:
                if not self.spec.clip:
                    raise ValueError(f"preset {self.preset.name!r} names no CLIP model ([guidance] clip) for text guidance")
                loaded = [load_clip(s, self.preset, self.device) for s in self.spec.clip]
                self.untrained |= {enc.name for enc, untrained in loaded if untrained}
                self._clips = tuple(enc for enc, _ in loaded)
            return self._clips

    def dino(self) -> DinoEncoder:
        """The DINO ViT (image guidance)."""
        with self._lock:
            if self._dino is None:
                if self.spec.dino is None:
                    raise ValueError(f"preset {self.preset.name!r} names no DINO model ([guidance] dino) for image guidance")
                self._dino, untrained = load_dino(self.spec.dino, self.preset, self.device)
                if untrained:
                    self.untrained.add(self._dino.name)
            return self._dino
