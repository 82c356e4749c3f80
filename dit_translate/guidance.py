"""Loading guidance models by a preset's spec: open_clip and timm (DINO), from the Hub, its cache or a folder.

Models are named as in a preset's ``[guidance]`` table (``presets.GuidanceSpec``):

* open_clip ``"arch/pretrained-tag"`` (weights from the Hugging Face Hub or its cache, safetensors
  preferred, never remote code) or ``"local-dir:/folder"`` (open_clip's ``open_clip_config.json`` +
  ``open_clip_model.safetensors`` layout);
* timm ``"arch.tag"`` (``timm.create_model(id, pretrained=True)``) or ``"local-dir:/folder"``
  (timm's ``config.json`` + ``model.safetensors`` layout).

Offline without the weights, loading raises ``MissingWeightsError`` naming the preset, the id and how
to fetch it. With ``fallback = "random-tiny"`` (guidance) or ``fallback = "random-dit"`` (a paired
preset's CLIP), missing ``local-dir`` folders are replaced by UNTRAINED random tiny models
(``untrained.untrained_folder``).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from dit_translate.encoders import ClipEncoder, DinoEncoder
from dit_translate.errors import MissingWeightsError
from dit_translate.presets import GuidanceSpec, Preset
from dit_translate.refs import LOCAL_DIR, is_local_dir, local_dir_folder, shown_path
from dit_translate.runtime import hub_offline
from dit_translate.untrained import untrained_folder
from dit_translate.weights import Availability, naming_bad_weights


# ---- resolving preset specs ----------------------------------------------------------------------
def _has_weights(folder: Path, config: str) -> bool:
    return (folder / config).is_file() and any(folder.glob("*.safetensors"))


def _local(spec: str, kind: str, preset: Preset) -> tuple[Path, bool]:
    """The folder of a ``local-dir:`` spec, or the untrained fallback; and whether it is untrained."""
    folder = local_dir_folder(spec)
    config = "open_clip_config.json" if kind == "clip" else "config.json"
    if _has_weights(folder, config):
        return folder, False
    if preset.guidance is not None and preset.guidance.fallback == "random-tiny":
        return untrained_folder(kind), True
    raise MissingWeightsError(
        f"preset {preset.name!r}: guidance {kind} folder {shown_path(folder)} is missing or holds no {config} + "
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

    if is_local_dir(spec):
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

    if is_local_dir(spec):
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
    if is_local_dir(spec):
        folder = local_dir_folder(spec)
        if _has_weights(folder, "open_clip_config.json" if kind == "clip" else "config.json"):
            return Availability(True, f"{kind} {shown_path(folder)}")
        if preset.guidance is not None and preset.guidance.fallback:
            return Availability(True, f"UNTRAINED random tiny {kind}", untrained=True)
        return Availability(False, f"{kind} folder {shown_path(folder)} missing")
    try:
        repo = _clip_repo(spec) if kind == "clip" else _dino_repo(spec)
    except ValueError as e:
        return Availability(False, str(e))
    if _cached(repo, _CLIP_FILES if kind == "clip" else _TIMM_FILES):
        return Availability(True, f"{kind} {spec} cached")
    if hub_offline():
        return Availability(False, f"{kind} {spec} not cached")
    return Availability(True, f"{kind} {spec} not cached, downloads on first use", downloads=True)


def guidance_availability(preset: Preset) -> Availability:
    """Can ``preset``'s guidance models load right now? Never touches the network."""
    if preset.guidance is None:
        return Availability(False, "no [guidance] table")
    spec = preset.guidance
    status = [_spec_status(s, "clip", preset) for s in spec.clip]
    if spec.dino is not None:
        status.append(_spec_status(spec.dino, "dino", preset))
    return Availability(all(a.ok for a in status), ", ".join(a.detail for a in status),
                        untrained=any(a.untrained for a in status), downloads=any(a.downloads for a in status))


# ---- a paired preset's CLIP tower ------------------------------------------------------------------
def clip_source(spec: str, preset: Preset) -> tuple[str, bool]:
    """The CLIP spec to load for ``preset`` and whether it is an UNTRAINED stand-in.

    A ``local-dir`` folder without weights is an error, unless the preset has ``fallback = "random-dit"``:
    then an untrained random tiny CLIP takes its place (loudly).
    """
    if not is_local_dir(spec) or _has_weights(local_dir_folder(spec), "open_clip_config.json"):
        return spec, False
    if preset.fallback != "random-dit":
        raise MissingWeightsError(
            f"preset {preset.name!r}: CLIP folder {local_dir_folder(spec)} is missing or holds no "
            "open_clip_config.json + safetensors weights; check the preset's [encoders] clip"
        )
    return LOCAL_DIR + str(untrained_folder("clip")), True


def load_clip_tower(spec: str, preset: Preset, device: torch.device | str = "cpu") -> ClipEncoder:
    """The frozen CLIP tower of an already resolved ``spec`` (see ``clip_source``) for ``preset``."""
    encoder, _ = load_clip(spec, dataclasses.replace(preset, guidance=GuidanceSpec(clip=(spec,))), device)
    return encoder


def load_feature_clip(spec: str, device: torch.device | str = "cpu") -> ClipEncoder:
    """A CLIP tower chosen for evaluation features (``eval --features``), by spec alone."""
    as_preset = Preset(name="eval --features", kind="dit", model=".", description="", size=256,
                       source=Path("eval"))
    return load_clip_tower(spec, as_preset, device)


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
