"""Configs of the tiny Stable-Diffusion-style models (diffusers / transformers classes).

The U-Net mirrors Stable Diffusion 1.x's block layout (3 cross-attention down blocks + 1 plain,
1 plain up block + 3 cross-attention up blocks, two layers per block) with tiny channels, so SD's
layer names (``up_blocks.1.attentions.0``, ``up_blocks.1.resnets.2``, ...) exist here too.
The VAE downsamples x4 (3 levels): 64 px images <-> 4x16x16 latents.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from dit_translate.tokenizer import (
    BOS_TOKEN_ID,
    CONTEXT_LENGTH,
    EOS_TOKEN_ID,
    VOCAB_SIZE,
)

VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 16,
    "sample_size": 64,
}

TEXT_CONFIG: dict = {
    "vocab_size": VOCAB_SIZE,
    "bos_token_id": BOS_TOKEN_ID,
    "eos_token_id": EOS_TOKEN_ID,
    "pad_token_id": EOS_TOKEN_ID,
    "max_position_embeddings": CONTEXT_LENGTH,
    "hidden_size": 32,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "projection_dim": 32,
}

UNET_CONFIG: dict = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [32, 32, 64, 64],
    "layers_per_block": 2,
    "norm_num_groups": 16,
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
}

SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


def make_vae(**overrides) -> AutoencoderKL:
    """A fresh tiny ``AutoencoderKL`` (images in [-1,1], (B,3,64,64) <-> latents (B,4,16,16))."""
    return AutoencoderKL(**{**VAE_CONFIG, **overrides})


def make_text_encoder(**overrides) -> CLIPTextModel:
    """A fresh tiny ``CLIPTextModel``: token ids (B,77) -> hidden states (B,77,hidden_size)."""
    return CLIPTextModel(CLIPTextConfig(**{**TEXT_CONFIG, **overrides}))


def make_unet(**overrides) -> UNet2DConditionModel:
    """A fresh tiny ``UNet2DConditionModel``: (B,4,16,16) latents + (B,77,32) text -> eps."""
    return UNet2DConditionModel(**{**UNET_CONFIG, **overrides})


def make_train_scheduler() -> DDPMScheduler:
    """Stable Diffusion's training noise schedule (scaled_linear 0.00085..0.012, 1000 steps)."""
    cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")}
    return DDPMScheduler(**cfg)


def make_sampling_scheduler() -> DDIMScheduler:
    """The DDIM scheduler shipped in the exported folder (Stable Diffusion's settings)."""
    return DDIMScheduler(**SCHEDULER_CONFIG)
