"""A cache of loaded models, one per kind per process, shared by the CLI, the app's tabs and benchmarks.

``ModelStore`` composes the loaders: editing presets (``diffusion.models``, resolved by ``weights``),
guidance models (``guidance``) and paired checkpoints (``paired.loading``). Where weights come from and
why they do not load is ``weights``'s business; ``availability(preset)`` says it without loading.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dit_translate.diffusion.models import DiffusionModels
from dit_translate.errors import MissingWeightsError
from dit_translate.guidance import Guidance, guidance_availability
from dit_translate.paired.loading import (
    PairedModels,
    load_paired,
    paired_availability,
    resolve_paired_folder,
)
from dit_translate.presets import GuidanceSpec, Preset, resolve_preset
from dit_translate.runtime import free_memory, pick_device, pick_dtype
from dit_translate.weights import (
    Availability,
    model_availability,
    naming_bad_weights,
    resolve_folder,
    without_safetensors,
)


def availability(preset: Preset) -> Availability:
    """Can ``preset``'s diffusion model load without error right now? Never touches the network.

    The detail also says whether its guidance models (AGG) load, and when they are UNTRAINED.
    """
    model = paired_availability(preset) if preset.paired is not None else model_availability(preset)
    if preset.guidance is None:
        return model
    guidance = guidance_availability(preset)
    return Availability(model.ok, f"{model.detail}; guidance: {guidance.detail}", model.untrained,
                        model.downloads or guidance.downloads)


@dataclass
class LoadedPaired:
    """A loaded paired checkpoint: its models, the preset it came from (None for ``--checkpoint``), its folder."""

    preset: Preset | None
    models: PairedModels
    folder: Path
    untrained: bool


@dataclass
class Loaded:
    """A loaded preset: its models and how it was resolved. ``lock`` serialises requests on the models across
    threads (``api`` holds it for each request): the methods patch the shared U-Net while they run (feature
    hooks, attention processors), so a concurrent pass would read or write another request's features."""

    preset: Preset
    models: DiffusionModels
    folder: Path
    untrained: bool
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    own_model: bool = False
    """Loaded with ``model=`` (``--model``): the default working size is then the model's own, not the preset's."""

    @property
    def working_size(self) -> int:
        """The default working side (longer side, pixels): the preset's ``size``, or the model's native size."""
        return self.models.native_size if self.own_model else self.preset.size


class ModelStore:
    """Keeps at most one loaded preset per process; switching presets frees the previous one.

    A switch first resolves (and, online, downloads) and checks the new weights, and frees the loaded model only
    once they are usable: a request for a preset that fails leaves the loaded one in place. ``_lock`` guards the
    cache and is never held while resolving, downloading or loading; ``_loading`` lets one load run at a time
    while requests for models already in memory are served at once.
    """

    def __init__(self, device: str | None = None, dtype: str | None = None) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self._lock = threading.Lock()
        self._loading = threading.Lock()
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

        def load() -> Loaded:
            folder, untrained = resolve_folder(p)  # may download: the loaded model stays until this succeeded
            unsafe = without_safetensors(folder)
            if unsafe:
                raise MissingWeightsError(
                    f"preset {p.name!r}: {folder} has no safetensors weights in {', '.join(unsafe)}; pickled "
                    "weights (.bin, .ckpt, .pt) are never loaded: convert them to safetensors"
                )
            self._evict("_current")
            with naming_bad_weights(f"preset {p.name!r}", folder):
                models = DiffusionModels.from_pipeline_folder(folder, device=self.device, dtype=self.dtype,
                                                              name=p.name)
            return Loaded(p, models, folder, untrained, own_model=bool(model))

        return self._load_once("_current", (p.name, p.model), load)

    def _load_once(self, slot: str, key: tuple, load: Callable[[], Loaded | LoadedPaired]) -> Loaded | LoadedPaired:
        """The entry in ``slot`` for ``key``, else ``load()`` (one load at a time; the cache lock is free while it
        resolves, downloads and loads, so models already in memory keep serving), kept in ``slot``."""
        cached = self._cached(slot, key)
        if cached is not None:
            return cached
        with self._loading:
            cached = self._cached(slot, key)  # another thread may have loaded it while this one waited
            if cached is not None:
                return cached
            loaded = load()
            with self._lock:
                setattr(self, slot, (key, loaded))
            return loaded

    def _cached(self, slot: str, key: tuple) -> Loaded | LoadedPaired | None:
        """The entry in ``slot`` if it was loaded for ``key``."""
        with self._lock:
            entry = getattr(self, slot)
            return entry[1] if entry is not None and entry[0] == key else None

    def _evict(self, slot: str) -> None:
        """Free what ``slot`` holds (to make room for the model about to load)."""
        with self._lock:
            setattr(self, slot, None)
        free_memory()

    def guidance(self, preset: str | Preset) -> Guidance:
        """The guidance models (CLIP/DINO) of ``preset``'s ``[guidance]`` table; each loads on first use.

        One preset's guidance models are kept per process; asking for another preset's frees them.
        """
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
        p = None
        if checkpoint is None:
            p = resolve_preset(preset)
            if p.paired is None:
                raise ValueError(f"preset {p.name!r} is a {p.kind!r} preset, not a paired-translation (dit) preset")
        key = ("checkpoint", str(Path(checkpoint).resolve())) if p is None else (p.name, p.model)

        def load() -> LoadedPaired:
            folder, untrained = (Path(key[1]), False) if p is None else resolve_paired_folder(p)
            self._evict("_paired")
            models = load_paired(folder, self.device, self.dtype)  # names a damaged weights file itself
            return LoadedPaired(p, models, folder, untrained or models.untrained)

        return self._load_once("_paired", key, load)

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


_default: ModelStore | None = None


def default_store() -> ModelStore:
    """The process-wide store (device and dtype chosen by ``runtime``)."""
    global _default
    if _default is None:
        _default = ModelStore()
    return _default
