"""The named variants of the methods that have more than one reading (importable without torch, for the
CLI's choices and the app's labels): which code or text each follows is in docs/methods.md."""

from __future__ import annotations

CORRECTION: dict[str, str] = {
    "released": "the authors' main.py: attention maps from one source pass",
    "full": "attention maps + ResBlock feature (inferred from the authors' notebooks)",
    "trajectory": "features along a DDIM inversion (the paper's description; ours)",
}
"""The semantic-discrepancy correction's variants (``methods.correction``), default first."""

DEFAULT_CORRECTION = "released"

AGG: dict[str, str] = {
    "paper": "the paper's text: one MCG step, then the AdamW refinement applied",
    "released": "the official code: refinement returns its pre-step value, adaptive CLIP weight, "
                "80 ImageNet templates, DINO [CLS] before the final norm, its inversion",
}
"""Asymmetric Gradient Guidance's variants (``methods.agg_variants``), default first: ``paper`` won on held-out
photos (benchmarks/results/agg_variants.md)."""

DEFAULT_AGG = "paper"
