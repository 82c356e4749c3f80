"""UNTRAINED stand-ins: random-weight models in the real folder layouts, built offline from configs.

They stand in (loudly labelled) for tiny-world weights that are missing, through the presets'
``fallback`` fields, and they are what the unit tests and benchmarks run on (as diffusers tests itself):

- a Stable-Diffusion-layout pipeline with SD's exact block structure (4 levels, 2 layers per block,
  cross-attention in the first three, so every SD layer name such as ``up_blocks.1.attentions.2``
  exists) at a tiny width, or at SD 1.5's full size (``sd15_unet``);
- a 64 px open_clip model and a 64 px timm ViT (AGG's guidance, the DiT's conditioning).

``untrained_folder(kind)`` builds each once per machine under ``UNTRAINED_CACHE`` (``built_once``:
assembled under a temporary name and renamed, safe across processes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dit_translate.encoders import IMAGENET_MEAN, IMAGENET_STD, save_clip
from dit_translate.files import publish_folder
from dit_translate.tokenizer import (
    BOS_TOKEN_ID,
    EOS_TOKEN_ID,
    VOCAB_SIZE,
    write_clip_tokenizer,
)

log = logging.getLogger(__name__)

UNTRAINED_CACHE = Path.home() / ".cache" / "dit-translate"
"""Where UNTRAINED stand-ins are built, once per machine."""

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
"""A 3.4 M-parameter open_clip config (64 px images, CLIP's BPE vocabulary): the untrained tiny fallback."""

TINY_DINO_ARGS = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 0}
"""A 0.1 M-parameter timm ViT (``vit_tiny_patch16_224`` resized): the untrained tiny DINO fallback."""

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


def build_random_clip(folder: str | Path, seed: int = 0, config: dict | None = None) -> Path:
    """Write a random-init open_clip model in the ``local-dir`` layout (config JSON + safetensors)."""
    import open_clip

    config = config or TINY_CLIP_CONFIG
    torch.manual_seed(seed)
    return save_clip(open_clip.CLIP(**config), config, folder)


def build_random_dino(folder: str | Path, seed: int = 0, model_args: dict | None = None) -> Path:
    """Write a random-init timm ViT with DINO's preprocessing in timm's ``local-dir`` layout."""
    import timm
    from timm.models import save_for_hf

    folder = Path(folder)
    model_args = model_args or TINY_DINO_ARGS
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **model_args)
    size = model_args["img_size"]
    cfg = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input_size": [3, size, size], "tag": "untrained"}
    save_for_hf(model, str(folder), model_config={"pretrained_cfg": cfg}, model_args=model_args, safe_serialization=True)
    return folder


def built_once(name: str, builder: Callable[[Path], object], what: str, root: Path | None = None) -> Path:
    """``root / name`` (default root: ``UNTRAINED_CACHE``), built by ``builder(folder)`` on first use, with a
    warning naming ``what``."""
    folder = (UNTRAINED_CACHE if root is None else Path(root)) / name
    if not folder.is_dir():
        log.warning("%s not found: building an UNTRAINED random stand-in at %s", what, folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        publish_folder(folder, builder)
    return folder


_STAND_INS: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "sd": ("tiny-untrained", lambda tmp: build_random_sd(tmp, seed=0), "tiny-world weights"),
    "clip": ("tiny-clip-untrained", lambda tmp: build_random_clip(tmp, seed=0), "a tiny CLIP"),
    "dino": ("tiny-dino-untrained", lambda tmp: build_random_dino(tmp, seed=0), "a tiny DINO"),
}


def untrained_folder(kind: str) -> Path:
    """The UNTRAINED stand-in of ``kind`` ("sd": an SD-layout pipeline, "clip": an open_clip ``local-dir``
    folder, "dino": a timm ``local-dir`` folder), built once per machine."""
    name, builder, what = _STAND_INS[kind]
    return built_once(name, builder, what)


def untrained_sd_folder() -> Path:
    """The random SD-layout pipeline (the ``tiny`` preset's ``random-sd`` fallback; its VAE also stands in
    for a ``random-dit`` preset's missing local VAE)."""
    return untrained_folder("sd")
