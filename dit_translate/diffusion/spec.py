"""Plain data about diffusion models that presets name, importable without torch or diffusers:
which U-Net layers a method records or injects (``FeatureSet``) and the prediction types."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
"""What a network predicts: the noise, the velocity ``v = sqrt(a) eps - sqrt(1 - a) x0``, or ``x0`` itself."""

KINDS = ("attn_probs", "attn_qk", "resnet")
"""The kinds of U-Net feature (see ``diffusion.features``)."""


@dataclass(frozen=True)
class FeatureSet:
    """Which layers to record or inject, per kind (diffusers module names or aliases, see ``resolve_layer``)."""

    attn_probs: tuple[str, ...] = ()
    attn_qk: tuple[str, ...] = ()
    resnet: tuple[str, ...] = ()

    def items(self) -> Iterator[tuple[str, str]]:
        for kind in KINDS:
            for layer in getattr(self, kind):
                yield kind, layer

    def __bool__(self) -> bool:
        return any(True for _ in self.items())

    def only(self, *kinds: str) -> FeatureSet:
        """The same layers restricted to ``kinds``."""
        return FeatureSet(**{k: getattr(self, k) if k in kinds else () for k in KINDS})
