"""A Diffusion Transformer conditioned on the CLIP image embedding of the source (docs/methods.md §6).

The architecture is DiT's (Peebles & Xie): patchify, 2-D sin-cos positions, a stack of adaLN-Zero
blocks, a modulated linear head and unpatchify. DiT's class-label embedding is replaced by a linear
projection of the source's CLIP image embedding, added to the timestep embedding; it is replaced by a
learned null vector (zero at init) for dropped conditions, which classifier-free guidance uses.

Non-paper variant (``source_channels > 0``, off in the paper presets): the source's latent is
concatenated to the noisy latent on the channel axis, giving the model pixel-aligned structure.

Shapes: ``x`` (B, C, H, W) with H, W multiples of ``patch_size`` (any size: positions are computed
for the input grid); ``t`` (B,) timesteps in [0, T); ``cond`` (B, cond_dim) CLIP embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed_from_grid
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from dit_translate.paired.config import DIT_SIZES, DiTSpec


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` of tokens (B, N, D) by per-sample (B, D) shift and scale."""
    return torch.addcmul(shift[:, None], x, 1 + scale[:, None])


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and PyTorch's SDPA kernel."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated (shift, scale, gate) by the conditioning."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=1)
        x = torch.addcmul(x, gate1[:, None], self.attn(modulate(self.norm1(x), shift1, scale1)))
        return torch.addcmul(x, gate2[:, None], self.mlp(modulate(self.norm2(x), shift2, scale2)))


class FinalLayer(nn.Module):
    """Modulated norm and a linear map from tokens to patches of ``patch * patch * channels`` values."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class PairedDiT(ModelMixin, ConfigMixin):
    """CLIP-image-conditioned DiT predicting the noise (epsilon) of ``x``.

    ``save_pretrained``/``from_pretrained`` write and read a folder with ``config.json`` and
    ``diffusion_pytorch_model.safetensors``.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        patch_size: int = 2,
        hidden_size: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        cond_dim: int = 768,
        source_channels: int = 0,
        frequency_dim: int = 256,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels + source_channels, hidden_size, patch_size, stride=patch_size)
        self.time_proj = Timesteps(frequency_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(frequency_dim, hidden_size)
        self.cond_embed = nn.Linear(cond_dim, hidden_size)
        self.null_cond = nn.Parameter(torch.zeros(cond_dim))
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.final = FinalLayer(hidden_size, patch_size, in_channels)
        self.gradient_checkpointing = False
        self._positions: dict[tuple, torch.Tensor] = {}
        self._init_weights()

    @classmethod
    def from_spec(cls, spec: DiTSpec, in_channels: int, cond_dim: int) -> PairedDiT:
        """A model of a preset's ``[dit]`` table for latents of ``in_channels`` and CLIP width ``cond_dim``."""
        depth, hidden, heads = spec.dims()
        return cls(in_channels=in_channels, patch_size=spec.patch, hidden_size=hidden, depth=depth,
                   num_heads=heads, cond_dim=cond_dim, source_channels=in_channels if spec.source_concat else 0)

    @classmethod
    def of_size(cls, size: str, patch_size: int = 2, **kwargs) -> PairedDiT:
        """A DiT-{tiny,S,B,L,XL}/``patch_size`` (e.g. ``of_size("B", 2)`` is DiT-B/2)."""
        depth, hidden, heads = DIT_SIZES[size]
        return cls(patch_size=patch_size, hidden_size=hidden, depth=depth, num_heads=heads, **kwargs)

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier linears, N(0, 0.02) embeddings, zero adaLN and output layers."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.out_channels, -1))
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.time_embed.linear_1, self.time_embed.linear_2, self.cond_embed):
            nn.init.normal_(layer.weight, std=0.02)
        for block in [*self.blocks, self.final]:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def positions(self, grid_h: int, grid_w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """2-D sin-cos position embeddings (1, grid_h * grid_w, hidden) in patch units, cached per grid."""
        key = (grid_h, grid_w, device, dtype)
        if key not in self._positions:
            ys = torch.arange(grid_h, dtype=torch.float32)
            xs = torch.arange(grid_w, dtype=torch.float32)
            grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))
            emb = get_2d_sincos_pos_embed_from_grid(self.config.hidden_size, grid, output_type="pt")
            self._positions[key] = emb[None].to(device=device, dtype=dtype)
        return self._positions[key]

    def condition(self, cond: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Project CLIP embeddings (B, cond_dim); rows with ``keep == False`` use the null embedding."""
        if keep is not None:
            cond = torch.where(keep[:, None], cond, self.null_cond.to(cond.dtype).expand_as(cond))
        return self.cond_embed(cond)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        source: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise prediction (B, C, H, W) for noisy ``x`` at timesteps ``t``.

        ``source`` (B, C, H, W): the source latent, required iff the model was built with
        ``source_channels``. ``keep`` (B,) bool: False drops that row's condition (CFG training/sampling).
        """
        if (source is None) != (self.config.source_channels == 0):
            raise ValueError("pass `source` exactly when the model concatenates the source (source_channels > 0)")
        b, _, h, w = x.shape
        p = self.config.patch_size
        if h % p or w % p:
            raise ValueError(f"input {h}x{w} is not divisible by the patch size {p}")
        if source is not None:
            x = torch.cat([x, source], dim=1)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.positions(h // p, w // p, tokens.device, tokens.dtype)
        t_freq = self.time_proj(t.reshape(-1).expand(b)).to(tokens.dtype)
        c = self.time_embed(t_freq) + self.condition(cond.to(tokens.dtype), keep)
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(block, tokens, c)
            else:
                tokens = block(tokens, c)
        return self.unpatchify(self.final(tokens, c), h // p, w // p)

    def unpatchify(self, tokens: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        """(B, grid_h * grid_w, p * p * C) patches -> (B, C, grid_h * p, grid_w * p)."""
        p, c = self.config.patch_size, self.config.in_channels
        x = tokens.reshape(-1, grid_h, grid_w, p, p, c)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, grid_h * p, grid_w * p)
