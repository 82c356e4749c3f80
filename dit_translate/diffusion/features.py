"""Capture and injection of U-Net features, per named layer and per timestep.

Three kinds of feature, each addressed by a diffusers module name:

- ``attn_probs``: self-attention probabilities ``softmax(Q K^T / sqrt(d))``, shape (B*heads, N, N),
  of an ``Attention`` module (``...transformer_blocks.0.attn1``). Injection computes
  ``A_saved @ V_current``.
- ``attn_qk``: the self-attention queries and keys, each (B*heads, N, d) (PnP's injection).
- ``resnet``: the residual-branch output of a ``ResnetBlock2D`` (its ``conv2`` output, before the
  skip connection is added), shape (B, C, H, W).

``record_features`` stores what a U-Net pass computes; ``inject_features`` overwrites it with stored
tensors. Both read the current timestep from the U-Net call itself (a forward pre-hook), install
attention processors and forward hooks on enter and restore the model exactly on exit, also when
the body raises. Stored tensors recorded from a batch of one are broadcast over the injected batch
(for instance both classifier-free-guidance branches).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D

from dit_translate.diffusion.ddim import first_fraction
from dit_translate.diffusion.spec import KINDS, FeatureSet

FeatureStore = dict[tuple[str, str, int], torch.Tensor]
"""Recorded features: ``{(kind, layer, timestep): tensor}``; ``attn_qk`` stores Q and K stacked on dim 0."""

Selector = Callable[[str, int], "int | None"]
"""``select(kind, t) -> recorded timestep to inject at U-Net timestep t, or None for no injection``."""


def windowed_selector(timesteps: Sequence[int], tau_attn: float, tau_feat: float) -> Selector:
    """PnP's injection windows over a descending grid: attention maps during its first ``tau_attn`` fraction,
    ResBlock features during its first ``tau_feat``, each at the U-Net's own timestep."""
    windows = {"resnet": first_fraction(timesteps, tau_feat)}
    attn_window = first_fraction(timesteps, tau_attn)

    def select(kind: str, t: int) -> int | None:
        return t if t in windows.get(kind, attn_window) else None

    return select

_LDM_BLOCK = re.compile(r"^(input|output)_blocks\.(\d+)$")


def resolve_layer(unet: torch.nn.Module, kind: str, name: str) -> str:
    """The full module name of ``name`` for feature ``kind``, validated against ``unet``.

    Accepted forms: a full diffusers name (``up_blocks.1.attentions.0.transformer_blocks.0.attn1``,
    ``up_blocks.1.resnets.2``); an attention-block name, resolved to its first transformer block's
    self-attention (``up_blocks.1.attentions.0``); the original LDM decoder index
    (``output_blocks.5`` = ``up_blocks[5 // n][5 % n]`` with ``n = layers_per_block + 1``), which works for
    SD 1.x and 2.x U-Nets alike. A name that does not exist or has the wrong module type raises
    ``ValueError``, never a silent no-op.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; expected one of {KINDS}")
    modules = dict(unet.named_modules())
    full = name
    m = _LDM_BLOCK.match(name)
    if m:
        if m.group(1) == "input":
            raise ValueError(f"layer {name!r}: only decoder (output_blocks.N) aliases are supported")
        per = int(unet.config.layers_per_block) + 1
        k = int(m.group(2))
        sub = "attentions" if kind.startswith("attn") else "resnets"
        full = f"up_blocks.{k // per}.{sub}.{k % per}"
    if kind.startswith("attn") and full in modules and not isinstance(modules[full], Attention):
        full = f"{full}.transformer_blocks.0.attn1"
    module = modules.get(full)
    if module is None:
        options = _valid_names(modules, kind)
        raise ValueError(f"layer {name!r} does not exist in this U-Net; valid {kind} layers: {', '.join(options)}")
    expected = Attention if kind.startswith("attn") else ResnetBlock2D
    if not isinstance(module, expected):
        raise ValueError(f"layer {name!r} is a {type(module).__name__}, not a {expected.__name__} ({kind})")
    if kind.startswith("attn") and module.is_cross_attention:
        raise ValueError(f"layer {name!r} is a cross-attention layer; {kind} needs self-attention (attn1)")
    return full


def _valid_names(modules: dict[str, torch.nn.Module], kind: str) -> list[str]:
    if kind.startswith("attn"):
        return [n for n, m in modules.items() if isinstance(m, Attention) and not m.is_cross_attention]
    return [n for n, m in modules.items() if isinstance(m, ResnetBlock2D)]


class _State:
    """Shared mutable state of one context: the current timestep and the feature store."""

    def __init__(self, store: FeatureStore, select: Selector | None) -> None:
        self.store = store
        self.select = select
        self.t: int | None = None
        self.used: list[tuple[str, str, int, int]] = []

    def source(self, kind: str, layer: str) -> torch.Tensor | None:
        """The stored tensor to inject now, or None (recording, or nothing scheduled at this timestep)."""
        if self.select is None or self.t is None:
            return None
        src_t = self.select(kind, self.t)
        if src_t is None:
            return None
        key = (kind, layer, src_t)
        if key not in self.store:
            raise KeyError(f"no recorded {kind} feature for layer {layer!r} at timestep {src_t}")
        self.used.append((kind, layer, self.t, src_t))
        return self.store[key]

    def record(self, kind: str, layer: str, value: torch.Tensor) -> None:
        if self.select is None:
            self.store[(kind, layer, self.t)] = value.detach().clone()


def _broadcast(saved: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Repeat a tensor recorded for a batch of one over the batch of ``like`` (dim 0 a multiple)."""
    if saved.shape[0] == like.shape[0]:
        return saved.to(like.dtype)
    if like.shape[0] % saved.shape[0]:
        raise ValueError(f"cannot broadcast a stored feature of batch {saved.shape[0]} over batch {like.shape[0]}")
    return saved.to(like.dtype).repeat(like.shape[0] // saved.shape[0], *([1] * (saved.dim() - 1)))


class FeatureAttnProcessor:
    """Self-attention processor that records or overwrites attention probabilities or Q/K.

    Outside its schedule it delegates to the layer's original processor (SDPA), so it costs
    nothing where nothing is recorded or injected.
    """

    def __init__(self, state: _State, layer: str, kinds: tuple[str, ...], original) -> None:
        self.state, self.layer, self.kinds, self.original = state, layer, kinds, original

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        state = self.state
        recording = state.select is None
        inject = {k: state.source(k, self.layer) for k in self.kinds} if not recording else {}
        if not recording and all(v is None for v in inject.values()):
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kw)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        attention_mask = attn.prepare_attention_mask(attention_mask, hidden_states.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query, key = attn.norm_q(query), attn.norm_k(key)
        if "attn_qk" in self.kinds:
            if recording:
                state.record("attn_qk", self.layer, torch.stack([query, key]))
            elif inject.get("attn_qk") is not None:
                qk = inject["attn_qk"]
                query, key = _broadcast(qk[0], query), _broadcast(qk[1], key)
        probs = attn.get_attention_scores(query, key, attention_mask)
        if "attn_probs" in self.kinds:
            if recording:
                state.record("attn_probs", self.layer, probs)
            elif inject.get("attn_probs") is not None:
                probs = _broadcast(inject["attn_probs"], probs)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def _features(unet: torch.nn.Module, features: FeatureSet, state: _State) -> Iterator[_State]:
    modules = dict(unet.named_modules())
    attn_kinds: dict[str, list[str]] = {}
    resnets: list[str] = []
    for kind, name in features.items():
        full = resolve_layer(unet, kind, name)
        if kind == "resnet":
            resnets.append(full)
        else:
            attn_kinds.setdefault(full, []).append(kind)
    originals = {name: modules[name].processor for name in attn_kinds}
    busy = [n for n, p in originals.items() if isinstance(p, FeatureAttnProcessor)]
    busy += [n for n in resnets if modules[f"{n}.conv2"]._forward_hooks]
    if busy:
        raise ValueError(f"layers {busy} already have a feature context; nest contexts on different layers only")
    handles = []

    def pre_hook(_module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        state.t = int(torch.as_tensor(t).flatten()[0])

    def resnet_hook(layer: str):
        def hook(_module, _inputs, output):
            if state.select is None:
                state.record("resnet", layer, output)
                return None
            saved = state.source("resnet", layer)
            return None if saved is None else _broadcast(saved, output)

        return hook

    try:
        handles.append(unet.register_forward_pre_hook(pre_hook, with_kwargs=True))
        for name, kinds in attn_kinds.items():
            modules[name].set_processor(FeatureAttnProcessor(state, name, tuple(kinds), originals[name]))
        for name in resnets:
            handles.append(modules[f"{name}.conv2"].register_forward_hook(resnet_hook(name)))
        yield state
    finally:
        for h in handles:
            h.remove()
        for name, proc in originals.items():
            modules[name].set_processor(proc)


@contextmanager
def record_features(
    unet: torch.nn.Module, features: FeatureSet, store: FeatureStore | None = None
) -> Iterator[FeatureStore]:
    """Record ``features`` of every U-Net call inside the block into ``store`` (returned), keyed by timestep."""
    state = _State({} if store is None else store, None)
    with _features(unet, features, state):
        yield state.store


@contextmanager
def inject_features(
    unet: torch.nn.Module, features: FeatureSet, store: FeatureStore, select: Selector
) -> Iterator[list[tuple[str, str, int, int]]]:
    """Overwrite ``features`` with tensors of ``store`` in every U-Net call inside the block.

    ``select(kind, t)`` names the recorded timestep to inject at U-Net timestep ``t`` (or None to
    leave the layer alone at ``t``). Yields a log of ``(kind, layer, t, recorded_t)`` injections.
    """
    state = _State(store, select)
    with _features(unet, features, state):
        yield state.used
