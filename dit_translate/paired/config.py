"""The tables of a paired-translation ("dit" kind) preset, as validated frozen dataclasses.

A ``kind = "dit"`` preset adds these tables to the common preset fields (``presets.py``); every
field has a default, so a table lists only what it changes::

    [dit]        architecture: size (tiny/S/B/L/XL), patch (2/4/8), source_concat, cond_dropout
    [pix2pix]    the GAN baseline: ngf, ndf, n_layers_d, l1_weight, lr, beta1
    [encoders]   vae ("" = pixel space), clip, lpips_net, lpips_backbone
    [data]       layout (ab/folders/colorization), a_dir, b_dir, direction, load_size, flip, val_fraction
    [diffusion]  num_train_timesteps, beta_schedule, beta_start, beta_end, prediction_type
    [train]      model (dit/pix2pix), steps, batch_size, lr, EMA, loss weights, intervals, ...

Which values the paper fixes and which are ours is documented in the preset files (docs/methods.md §6).
Errors are ``ValueError`` naming ``[table] field`` (``presets.py`` adds the file name).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dit_translate.diffusion.spec import PREDICTION_TYPES
from dit_translate.refs import absolute, is_local_ref, resolve_clip_ref

DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (4, 128, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
"""DiT sizes ``name -> (depth, hidden size, heads)``; S/B/L/XL are the DiT paper's, ``tiny`` is ours (CPU)."""

PATCH_SIZES = (1, 2, 4, 8)
"""Patch sizes: 2/4/8 are the DiT paper's; 1 is ours, for the tiny world's 16x16 latents."""
MODEL_KINDS = ("dit", "pix2pix")


@dataclass(frozen=True)
class DiTSpec:
    """Architecture of the DiT. ``depth``/``hidden_size``/``num_heads`` override the size when > 0."""

    size: str = "S"
    patch: int = 2
    source_concat: bool = False
    cond_dropout: float = 0.1
    depth: int = 0
    hidden_size: int = 0
    num_heads: int = 0

    def dims(self) -> tuple[int, int, int]:
        """``(depth, hidden size, heads)`` after overrides."""
        depth, hidden, heads = DIT_SIZES[self.size]
        return self.depth or depth, self.hidden_size or hidden, self.num_heads or heads


@dataclass(frozen=True)
class Pix2PixSpec:
    """The pix2pix baseline (Isola et al.): U-Net generator, 70x70 PatchGAN, L1 weight 100, Adam 2e-4 / 0.5."""

    ngf: int = 64
    ndf: int = 64
    n_layers_d: int = 3
    l1_weight: float = 100.0
    lr: float = 2e-4
    beta1: float = 0.5


@dataclass(frozen=True)
class EncoderSpec:
    """Frozen encoders. ``vae``: hub id or folder ("" = pixel space); ``clip``: open_clip
    ``"arch/pretrained-tag"`` or ``"local-dir:folder"`` (as in ``[guidance]``); ``lpips_backbone``: a
    local file with the torchvision backbone weights ("" = the torch hub cache)."""

    vae: str = ""
    vae_subfolder: str = ""
    clip: str = "ViT-L-14-quickgelu/openai"
    lpips_net: str = "alex"
    lpips_backbone: str = ""


@dataclass(frozen=True)
class DataSpec:
    """How a data folder pairs images. ``load_size`` 0 means the preset's ``size`` (no random crop).

    ``layout = "colorization"``: any folder of colour photos, each its own pair (its grey version -> itself);
    a pix2pix model trained on it is the L -> ab colouriser (``paired/pix2pix.py``)."""

    layout: str = "ab"
    a_dir: str = "A"
    b_dir: str = "B"
    direction: str = "AtoB"
    load_size: int = 0
    flip: bool = True
    val_fraction: float = 0.05


@dataclass(frozen=True)
class DiffusionSpec:
    """The training noise schedule (DiT's defaults: linear betas 1e-4 .. 0.02 over 1000 steps) and what
    the network predicts: ``epsilon`` (DiT's), ``v_prediction`` or ``sample`` (x0)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation, logging and loss weights. ``aux_t_max``: CLIP/LPIPS terms only for t < aux_t_max."""

    model: str = "dit"
    steps: int = 400_000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    ema_decay: float = 0.9999
    max_grad_norm: float = 1.0
    mixed_precision: str = "bf16"
    seed: int = 0
    save_every: int = 5000
    sample_every: int = 2000
    log_every: int = 50
    num_workers: int = 4
    sample_steps: int = 25
    lambda_clip: float = 0.1
    lambda_lpips: float = 0.1
    aux_t_max: int = 500
    clip_reference: str = "target"
    cache_latents: bool = True


@dataclass(frozen=True)
class PairedSpec:
    """All tables of a paired preset."""

    dit: DiTSpec = field(default_factory=DiTSpec)
    pix2pix: Pix2PixSpec = field(default_factory=Pix2PixSpec)
    encoders: EncoderSpec = field(default_factory=EncoderSpec)
    data: DataSpec = field(default_factory=DataSpec)
    diffusion: DiffusionSpec = field(default_factory=DiffusionSpec)
    train: TrainSpec = field(default_factory=TrainSpec)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


TABLES: dict[str, type] = {
    "dit": DiTSpec, "pix2pix": Pix2PixSpec, "encoders": EncoderSpec,
    "data": DataSpec, "diffusion": DiffusionSpec, "train": TrainSpec,
}

_CHOICES: dict[str, tuple] = {
    "dit.size": tuple(DIT_SIZES),
    "dit.patch": PATCH_SIZES,
    "encoders.lpips_net": ("alex", "vgg"),
    "data.layout": ("ab", "folders", "colorization"),
    "data.direction": ("AtoB", "BtoA"),
    "diffusion.beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "diffusion.prediction_type": PREDICTION_TYPES,
    "train.model": MODEL_KINDS,
    "train.lr_schedule": ("constant", "constant_with_warmup", "cosine", "linear"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.clip_reference": ("target", "source"),
}
_RANGES: dict[str, tuple[float, float]] = {
    "dit.cond_dropout": (0.0, 0.99),
    "pix2pix.ngf": (1, 1024), "pix2pix.ndf": (1, 1024), "pix2pix.n_layers_d": (1, 6),
    "pix2pix.l1_weight": (0.0, 1e4), "pix2pix.lr": (1e-8, 1.0), "pix2pix.beta1": (0.0, 0.999),
    "data.load_size": (0, 4096), "data.val_fraction": (0.0, 0.9),
    "diffusion.num_train_timesteps": (2, 10_000), "diffusion.beta_start": (1e-8, 0.5),
    "diffusion.beta_end": (1e-8, 0.999),
    "train.steps": (1, 10**9), "train.batch_size": (1, 65_536), "train.grad_accum": (1, 1024),
    "train.lr": (1e-8, 1.0), "train.weight_decay": (0.0, 1.0), "train.warmup_steps": (0, 10**9),
    "train.ema_decay": (0.0, 1.0), "train.max_grad_norm": (0.0, 1e6), "train.save_every": (1, 10**9),
    "train.sample_every": (1, 10**9), "train.log_every": (1, 10**9), "train.num_workers": (0, 64),
    "train.sample_steps": (1, 1000), "train.lambda_clip": (0.0, 1e3), "train.lambda_lpips": (0.0, 1e3),
    "train.aux_t_max": (0, 10_000),
}


def check_fields(obj: Any, table: str, ranges: dict[str, tuple[float, float]],
                 choices: dict[str, tuple] | None = None) -> Any:
    """Validate a config dataclass ``obj`` in place and return it: every field has the type of its default
    (an int is taken for a float and converted), lies in ``ranges["<table>.<field>"]`` and is one of
    ``choices["<table>.<field>"]`` where given. ``ValueError`` naming ``[table] field`` otherwise."""
    for f in dataclasses.fields(obj):
        key, value = f.name, getattr(obj, f.name)
        expected = type(f.default if f.default is not dataclasses.MISSING else f.default_factory())
        ok = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
            object.__setattr__(obj, key, value)
        if not ok:
            raise ValueError(f"[{table}] {key} must be a {expected.__name__}, got {value!r}")
        name = f"{table}.{key}"
        if choices and name in choices and value not in choices[name]:
            raise ValueError(f"[{table}] {key} must be one of {choices[name]}, got {value!r}")
        if name in ranges:
            low, high = ranges[name]
            if not low <= value <= high:
                raise ValueError(f"[{table}] {key} must be in [{low:g}, {high:g}], got {value!r}")
    return obj


def _parse_table(cls: type, table: str, raw: Any):
    if not isinstance(raw, dict):
        raise ValueError(f"[{table}] must be a table")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"unknown [{table}] field(s) {unknown}; allowed: {sorted(fields)}")
    return check_fields(cls(**raw), table, _RANGES, _CHOICES)


def _resolve_encoders(enc: EncoderSpec, base: Path | None) -> EncoderSpec:
    """Check the encoder references and make local ones absolute against the folder ``base``."""
    clip = resolve_clip_ref(enc.clip, base, "[encoders] clip")
    vae = absolute(enc.vae, base) if is_local_ref(enc.vae) else enc.vae
    backbone = absolute(enc.lpips_backbone, base) if enc.lpips_backbone else ""
    return dataclasses.replace(enc, vae=vae, clip=clip, lpips_backbone=backbone)


def parse_paired(data: dict[str, Any], image_size: int, base: Path | None = None) -> PairedSpec:
    """Validate the paired tables of a parsed preset (absent tables take their defaults).

    Local encoder paths are made absolute against the folder ``base`` (the preset's folder).
    """
    spec = PairedSpec(**{name: _parse_table(cls, name, data.get(name, {})) for name, cls in TABLES.items()})
    spec = dataclasses.replace(spec, encoders=_resolve_encoders(spec.encoders, base))
    if spec.diffusion.beta_end <= spec.diffusion.beta_start:
        raise ValueError("[diffusion] beta_end must be larger than beta_start")
    if spec.train.aux_t_max > spec.diffusion.num_train_timesteps:
        raise ValueError("[train] aux_t_max must be at most [diffusion] num_train_timesteps")
    depth, hidden, heads = spec.dit.dims()
    if hidden % heads or (hidden // heads) % 2:
        raise ValueError(f"[dit] hidden size {hidden} must split into {heads} heads of an even width")
    if hidden % 4:
        raise ValueError(f"[dit] hidden size {hidden} must be a multiple of 4 (2-D sin-cos positions)")
    if spec.data.load_size and spec.data.load_size < image_size:
        raise ValueError(f"[data] load_size {spec.data.load_size} must be 0 or at least 'size' {image_size}")
    return spec

