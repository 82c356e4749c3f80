"""Loads models by preset, once per process, and shares them (CLI, app tabs, benchmarks).

Hub ids load from the Hugging Face cache or, when online, from the Hub (safetensors and configs
only: pickled weights are never downloaded). Offline without a cached copy the load fails at once
with a ``MissingWeightsError`` that names the preset, the missing id and how to get it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from dit_translate.diffusion.models import DiffusionModels
from dit_translate.files import publish_folder
from dit_translate.presets import GuidanceSpec, Preset, resolve_preset
from dit_translate.runtime import free_memory, hub_offline, is_out_of_memory, pick_device, pick_dtype

if TYPE_CHECKING:
    from dit_translate.encoders import Guidance
    from dit_translate.paired.translate import PairedModels

log = logging.getLogger(__name__)

_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
ALLOW_PATTERNS = [
    "*.json",  # model_index.json; a pixel model's config.json / scheduler_config.json
    "diffusion_pytorch_model.safetensors",  # a pixel (UNet2DModel) checkpoint at the repo root
    *(f"{c}/*.json" for c in _COMPONENTS),
    *(f"{c}/*.safetensors" for c in _COMPONENTS),
    "tokenizer/*.txt",
]
IGNORE_PATTERNS = ["*.fp16.*", "*non_ema*", "*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.onnx*"]
UNTRAINED_CACHE = Path.home() / ".cache" / "dit-translate"


class MissingWeightsError(RuntimeError):
    """A preset's weights are neither on disk nor downloadable here."""


class CorruptWeightsError(MissingWeightsError):
    """Weights on disk that cannot be loaded (a truncated or corrupt safetensors file, or files that do not
    match their config); the message names the file or folder. A ``MissingWeightsError`` too: the weights
    are not usable here, and the CLI and the app report both the same way."""


def unreadable_weights(folder: Path) -> tuple[Path, str] | None:
    """The first ``*.safetensors`` file under ``folder`` whose header or length is invalid, and why.

    Reads headers only. A safetensors file carries no checksum: flipped bytes inside a tensor's data
    load without error and cannot be detected here.
    """
    from safetensors import safe_open

    for path in sorted(Path(folder).rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every defect
            return path, str(e)
    return None


@contextmanager
def naming_bad_weights(what: str, folder: str | Path) -> Iterator[None]:
    """Turn a failure to load ``what`` from ``folder`` into one ``CorruptWeightsError`` naming the bad file.

    Out-of-memory errors and ``MissingWeightsError`` pass through unchanged.
    """
    try:
        yield
    except MissingWeightsError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        if is_out_of_memory(e):
            raise
        bad = unreadable_weights(Path(folder))
        if bad is not None:
            detail = f"the weights file {bad[0]} is truncated or corrupt ({bad[1]})"
        else:
            detail = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        raise CorruptWeightsError(f"cannot load {what} from {folder}: {detail}; restore or re-download it") from e


@dataclass(frozen=True)
class Availability:
    """Whether a preset's weights can be loaded now, a one-line explanation, and whether its model (for a
    guidance bundle: any of its models) is an UNTRAINED random stand-in for missing tiny-world weights.
    A preset's availability flags its diffusion model only; the detail names untrained guidance models."""

    ok: bool
    detail: str
    untrained: bool = False


def _is_model_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def availability(preset: Preset) -> Availability:
    """Can ``preset``'s diffusion model load without error right now? Never touches the network.

    The detail also says whether its guidance models (AGG) load, and when they are UNTRAINED.
    """
    model = _model_availability(preset)
    if preset.guidance is None:
        return model
    from dit_translate.encoders import guidance_availability

    guidance = guidance_availability(preset)
    return Availability(model.ok, f"{model.detail}; guidance: {guidance.detail}", model.untrained)


def _model_availability(preset: Preset) -> Availability:
    if preset.paired is not None:
        return _paired_availability(preset)
    if preset.is_local:
        path = Path(preset.model)
        if _is_model_folder(path):
            return Availability(True, f"local folder {path}")
        if preset.fallback:
            return Availability(True, f"UNTRAINED random weights (trained weights missing at {path})", untrained=True)
        return Availability(False, f"missing local folder {path}")
    if _cached_snapshot(preset) is not None:
        return Availability(True, f"in the Hugging Face cache ({preset.model})")
    if hub_offline():
        return Availability(False, f"not cached and HF_HUB_OFFLINE=1 ({preset.model})")
    return Availability(True, f"downloads {preset.model} from the Hugging Face Hub on first use")


def _is_paired_checkpoint(path: Path) -> bool:
    return (path / "paired.json").is_file()


def _paired_availability(preset: Preset) -> Availability:
    path = Path(preset.model)
    if _is_paired_checkpoint(path):
        return Availability(True, f"checkpoint folder {path}")
    if preset.fallback == "random-dit":
        return Availability(True, f"UNTRAINED random DiT (no trained checkpoint at {path})", untrained=True)
    return Availability(False, f"no trained checkpoint at {path}")


def resolve_paired_folder(preset: Preset) -> tuple[Path, bool]:
    """The checkpoint folder of a paired (``kind = "dit"``) preset and whether it is an untrained stand-in."""
    path = Path(preset.model)
    if _is_paired_checkpoint(path):
        return path, False
    if preset.fallback == "random-dit":
        from dit_translate.paired.translate import build_untrained

        return build_untrained(preset, UNTRAINED_CACHE), True
    raise MissingWeightsError(
        f"preset {preset.name!r}: no trained checkpoint at {path} (no paired.json); train one with "
        f"`python -m dit_translate train --config {preset.source} --data DIR --out {path}` or pass --checkpoint"
    )


def _cached_snapshot(preset: Preset) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(preset.model, revision=preset.revision, allow_patterns=ALLOW_PATTERNS,
                                      ignore_patterns=IGNORE_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        return None


def fetch_instructions(preset: Preset) -> str:
    return (
        f"download it where the network is available with `hf download {preset.model}` "
        f"(it then loads from the Hugging Face cache), or pass --model /path/to/a/local/copy"
    )


def _without_safetensors(folder: Path) -> list[str]:
    """The weight folders of a diffusers model folder (``unet``, ``vae``, ``text_encoder``, or the folder itself
    for a pixel model) that hold no ``*.safetensors`` file."""
    parts = [c for c in ("unet", "vae", "text_encoder") if (folder / c).is_dir()] or ["."]
    return [part for part in parts if not any((folder / part).glob("*.safetensors"))]


def resolve_folder(preset: Preset) -> tuple[Path, bool]:
    """The local folder holding ``preset``'s weights, downloading if allowed; and whether it is untrained."""
    if preset.is_local:
        path = Path(preset.model)
        if _is_model_folder(path):
            return path, False
        if preset.fallback == "random-sd":
            return untrained_sd_folder(), True
        raise MissingWeightsError(
            f"preset {preset.name!r}: model folder {path} does not exist or holds no model "
            f"(no model_index.json/config.json); check the preset's 'model' field or pass --model"
        )
    cached = _cached_snapshot(preset)
    if cached is not None:
        return cached, False
    if hub_offline():
        raise MissingWeightsError(
            f"preset {preset.name!r} needs {preset.model!r}, which is not in the Hugging Face cache, and "
            f"HF_HUB_OFFLINE=1 forbids downloading it: {fetch_instructions(preset)}"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(preset.model, revision=preset.revision, allow_patterns=ALLOW_PATTERNS,
                                      ignore_patterns=IGNORE_PATTERNS)), False
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one clear message
        raise MissingWeightsError(
            f"preset {preset.name!r}: could not download {preset.model!r} ({type(e).__name__}: {e}); "
            f"{fetch_instructions(preset)}"
        ) from None


def untrained_sd_folder() -> Path:
    """A random SD-layout pipeline built once per machine (the ``tiny`` fallback before training; its VAE
    also stands in for a ``random-dit`` preset's missing local VAE)."""
    from dit_translate.tiny.random_sd import build_random_sd

    folder = UNTRAINED_CACHE / "tiny-untrained"
    if not (folder / "model_index.json").is_file():
        log.warning("tiny-world weights not found: building an UNTRAINED random pipeline at %s", folder)
        publish_folder(folder, lambda tmp: build_random_sd(tmp, seed=0))
    return folder


@dataclass
class LoadedPaired:
    """A loaded paired checkpoint: its models, the preset it came from (None for ``--checkpoint``), its folder."""

    preset: Preset | None
    models: PairedModels
    folder: Path
    untrained: bool


@dataclass
class Loaded:
    """A loaded preset: its models and how it was resolved."""

    preset: Preset
    models: DiffusionModels
    folder: Path
    untrained: bool


class ModelStore:
    """Keeps at most one loaded preset per process; switching presets frees the previous one."""

    def __init__(self, device: str | None = None, dtype: str | None = None) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self._lock = threading.Lock()
        self._current: tuple[tuple[str, str], Loaded] | None = None
        self._guidance: tuple[tuple[str, GuidanceSpec | None], Guidance] | None = None
        self._paired: tuple[tuple[str, str], LoadedPaired] | None = None

    def get(self, preset: str | Preset, model: str | None = None) -> Loaded:
        """The models of ``preset`` (name, path or ``Preset``), optionally pointed at another ``model``."""
        p = resolve_preset(preset)
        if p.paired is not None:
            raise ValueError(f"preset {p.name!r} is a paired-translation (dit) preset; use it with translate, "
                             "not with an editing method")
        if model:
            p = p.with_model(model)
        key = (p.name, p.model)
        with self._lock:
            if self._current is not None and self._current[0] == key:
                return self._current[1]
            self._free()
            folder, untrained = resolve_folder(p)
            unsafe = _without_safetensors(folder)
            if unsafe:
                raise MissingWeightsError(
                    f"preset {p.name!r}: {folder} has no safetensors weights in {', '.join(unsafe)}; pickled "
                    "weights (.bin, .ckpt, .pt) are never loaded: convert them to safetensors"
                )
            with naming_bad_weights(f"preset {p.name!r}", folder):
                models = DiffusionModels.from_pipeline_folder(folder, device=self.device, dtype=self.dtype,
                                                              name=p.name)
            loaded = Loaded(p, models, folder, untrained)
            self._current = (key, loaded)
            return loaded

    def guidance(self, preset: str | Preset) -> Guidance:
        """The guidance models (CLIP/DINO) of ``preset``'s ``[guidance]`` table; each loads on first use.

        One preset's guidance models are kept per process; asking for another preset's frees them.
        """
        from dit_translate.encoders import Guidance

        p = resolve_preset(preset)
        key = (p.name, p.guidance)
        with self._lock:
            if self._guidance is None or self._guidance[0] != key:
                self._guidance = None
                free_memory()
                self._guidance = (key, Guidance(p, self.device))
            return self._guidance[1]

    def get_paired(self, preset: str | Preset = "tiny-dit", checkpoint: str | Path | None = None) -> LoadedPaired:
        """The paired-translation models of ``checkpoint`` (a folder) if given, else of the ``kind = "dit"``
        ``preset``. One paired checkpoint is kept per process, next to one editing preset."""
        from dit_translate.paired.translate import load_paired

        p = None
        if checkpoint is None:
            p = resolve_preset(preset)
            if p.paired is None:
                raise ValueError(f"preset {p.name!r} is a {p.kind!r} preset, not a paired-translation (dit) preset")
        key = ("checkpoint", str(Path(checkpoint).resolve())) if p is None else (p.name, p.model)
        with self._lock:
            if self._paired is not None and self._paired[0] == key:
                return self._paired[1]
            self._paired = None
            free_memory()
            folder, untrained = (Path(key[1]), False) if p is None else resolve_paired_folder(p)
            models = load_paired(folder, self.device, self.dtype)  # names a damaged weights file itself
            self._paired = (key, LoadedPaired(p, models, folder, untrained or models.untrained))
            return self._paired[1]

    def loaded(self) -> dict[str, str]:
        """What is in memory now: ``{"editing": preset, "guidance": preset, "paired": preset or folder}``."""
        with self._lock:
            out = {}
            if self._current is not None:
                out["editing"] = self._current[0][0]
            if self._guidance is not None:
                out["guidance"] = self._guidance[0][0]
            if self._paired is not None:
                kind, name = self._paired[0]
                out["paired"] = name if kind == "checkpoint" else kind
            return out

    def _free(self) -> None:
        self._current = None
        free_memory()


_default: ModelStore | None = None


def default_store() -> ModelStore:
    """The process-wide store (device and dtype chosen by ``runtime``)."""
    global _default
    if _default is None:
        _default = ModelStore()
    return _default
