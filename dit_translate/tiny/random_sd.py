"""Randomly initialised Stable-Diffusion-layout pipelines, built offline from configs.

They have Stable Diffusion's exact block structure (4 levels, 2 layers per block, cross-attention in
the first three, so every SD layer name such as ``up_blocks.1.attentions.2`` exists) at a tiny width.
Used by the unit tests (as diffusers tests itself) and as the clearly labelled *untrained*
fallback of the ``tiny`` preset before trained tiny-world weights exist; the SD-1.5-size variant
is used by the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dit_translate.tiny.tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, VOCAB_SIZE, write_clip_tokenizer

SD_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def random_unet(width: int = 32, cross_attention_dim: int = 32, sample_size: int = 8, sd15_size: bool = False):
    """A ``UNet2DConditionModel`` with SD 1.x's block structure; ``sd15_size`` gives SD 1.5's exact size."""
    if sd15_size:
        return UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers defaults = SD 1.x
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(width, width, 2 * width, 2 * width),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def random_vae(width: int = 16, levels: int = 2):
    """An ``AutoencoderKL`` with 4 latent channels and ``2 ** (levels - 1)`` downsampling."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=(width,) * levels,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )


def random_text_encoder(hidden_size: int = 32) -> CLIPTextModel:
    """A small ``CLIPTextModel`` over the full CLIP BPE vocabulary."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            bos_token_id=BOS_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
            pad_token_id=EOS_TOKEN_ID,
            max_position_embeddings=77,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_attention_heads=4,
            num_hidden_layers=2,
        )
    )


def build_random_sd(
    folder: str | Path, seed: int = 0, *, width: int = 32, vae_levels: int = 2, sd15_unet: bool = False
) -> Path:
    """Write a random SD-layout pipeline folder (safetensors) to ``folder`` and return it."""
    folder = Path(folder)
    torch.manual_seed(seed)
    text_dim = 768 if sd15_unet else 32
    unet = random_unet(width, text_dim, sd15_size=sd15_unet)
    vae = random_vae(levels=vae_levels)
    text_encoder = random_text_encoder(text_dim)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(folder / "_tokenizer_src"))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    for f in (folder / "_tokenizer_src").iterdir():
        f.unlink()
    (folder / "_tokenizer_src").rmdir()
    return folder
