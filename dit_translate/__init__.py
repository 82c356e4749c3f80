"""dit-translate: diffusion image-to-image translation.

The public API: load models by preset (``ModelStore``), run a method on a (1, 3, H, W) tensor in
[-1, 1] (``sdedit``, ``correct``, ``pnp``), or go from an image file to a result (``api.edit``).
"""

from dit_translate.diffusion.features import FeatureSet, inject_features, record_features
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.methods.common import TranslationResult
from dit_translate.methods.correction import correct
from dit_translate.methods.pnp import pnp
from dit_translate.methods.sdedit import sdedit
from dit_translate.store import ModelStore, default_store

__all__ = [
    "DiffusionModels",
    "FeatureSet",
    "ModelStore",
    "TranslationResult",
    "correct",
    "default_store",
    "inject_features",
    "pnp",
    "record_features",
    "sdedit",
]
