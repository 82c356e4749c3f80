"""AGG's named variants (``methods.variants.AGG``) as ``AGGConfig`` fields and style-loss options."""

from __future__ import annotations

from dit_translate.methods.agg import AGGConfig

VARIANT_FIELDS: dict[str, dict] = {
    "released": {"steps": 100, "refine_output": "pre-step", "adaptive_clip": True, "inversion": "adm"},
    "paper": {"steps": 100},
}
"""``AGGConfig`` fields of each variant (``methods.variants.AGG``): both use the official grid (100 respaced steps,
skip 40: 19 edit, 20 middle and 21 last steps)."""

VARIANT_LOSSES: dict[str, dict] = {
    "released": {"imagenet_templates": True, "raw_mean": True, "pre_norm": True},
    "paper": {"imagenet_templates": False, "raw_mean": False, "pre_norm": False},
}
"""How each variant builds its style loss (``api.guide``): CLIP's 80 ImageNet templates averaged as raw features,
or our 6 templates averaged as unit vectors [I]; DINO [CLS] before or after the final norm."""


def variant_config(variant: str, **fields) -> AGGConfig:
    """The ``AGGConfig`` of ``variant`` ("released" or "paper"), with ``fields`` overriding its values."""
    if variant not in VARIANT_FIELDS:
        raise ValueError(f"unknown AGG variant {variant!r}; choose one of {', '.join(VARIANT_FIELDS)}")
    return AGGConfig(**{**VARIANT_FIELDS[variant], **{k: v for k, v in fields.items() if v is not None}})
