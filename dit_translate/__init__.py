"""dit-translate: diffusion image-to-image translation.

The public API, imported on first use (so ``python -m dit_translate presets`` and reading a preset load
no model code):

- from an image file to a result: ``api.edit``, ``api.guide``, ``api.translate``, ``api.colorize``
  (``dit_translate.api``);
- the methods on tensors, (1, 3, H, W) in [-1, 1]: ``sdedit``, ``correct``, ``pnp``, ``agg``, and the
  paired ``translate``; each returns a ``TranslationResult``;
- models: ``ModelStore`` / ``default_store`` (loaded by preset), ``DiffusionModels`` (a loaded bundle),
  ``load_preset``;
- colour: ``recombine`` (the luma-locked L/ab recombination every colouriser uses, ``dit_translate.colour``);
- the feature seam: ``FeatureSet``, ``record_features``, ``inject_features``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

# torch creates ``$TMPDIR/torchinductor_<user>`` when it is imported unless this names another folder; keep its
# compile cache in the user's cache folder instead of leaving a folder in the shared temp dir (set before any
# torch import: the CLI and the app import this package first).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dit-translate" / "torchinductor"))

_EXPORTS = {
    "DiffusionModels": "dit_translate.diffusion.models",
    "FeatureSet": "dit_translate.diffusion.spec",
    "inject_features": "dit_translate.diffusion.features",
    "record_features": "dit_translate.diffusion.features",
    "TranslationResult": "dit_translate.methods.common",
    "sdedit": "dit_translate.methods.sdedit",
    "correct": "dit_translate.methods.correction",
    "pnp": "dit_translate.methods.pnp",
    "agg": "dit_translate.methods.agg",
    "translate": "dit_translate.paired.sampling",
    "load_preset": "dit_translate.presets",
    "recombine": "dit_translate.colour",
    "ModelStore": "dit_translate.store",
    "default_store": "dit_translate.store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name on first use (as diffusers does)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dit_translate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
