"""A loaded diffusion model bundle: U-Net, optional VAE and text encoder, scheduler, on one device."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from dit_translate.diffusion.codec import LatentCodec
from dit_translate.diffusion.ddim import Schedule, Steps, make_steps
from dit_translate.diffusion.denoiser import Denoiser, TextCondition, unet_network

log = logging.getLogger(__name__)


@dataclass
class DiffusionModels:
    """Everything a method needs from a diffusion checkpoint.

    Latent models (Stable Diffusion layout) have a ``vae``; pixel models (``UNet2DModel``, DDPM/ADM
    family) have ``vae=None`` and work on images directly. Images are (B, 3, H, W) in [-1, 1].
    ``scheduler`` is always a ``DDIMScheduler`` built from the checkpoint's scheduler config. The methods
    patch the U-Net while they run (feature hooks, attention processors): callers that share a bundle
    across threads serialise its use (``store.Loaded.lock``).
    """

    unet: torch.nn.Module
    scheduler: DDIMScheduler
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenizer: object | None = None
    name: str = "model"
    _prompt_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    codec: LatentCodec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.codec = LatentCodec(self.vae)

    @classmethod
    def from_pipeline_folder(
        cls, folder: str | Path, *, device: torch.device, dtype: torch.dtype, name: str | None = None
    ) -> DiffusionModels:
        """Load a diffusers Stable-Diffusion-style folder (``unet/``, ``vae/``, ``text_encoder/``, ...).

        A folder with only ``unet/`` (or a bare ``UNet2DModel`` folder) loads as a pixel model.
        Weights must be safetensors (``use_safetensors=True``); pickles are refused.
        """
        from diffusers import AutoencoderKL, UNet2DModel
        from transformers import CLIPTextModel, CLIPTokenizer

        folder = Path(folder)
        kw = {"torch_dtype": dtype, "use_safetensors": True}
        if (folder / "model_index.json").exists() or (folder / "unet").is_dir():
            unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
            vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
            text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw)
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
            scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        else:
            unet = UNet2DModel.from_pretrained(folder, **kw)
            vae = text_encoder = tokenizer = None
            scheduler = DDIMScheduler.from_pretrained(folder)
        return cls.from_components(
            unet, scheduler, vae, text_encoder, tokenizer, device=device, dtype=dtype, name=name or folder.name
        )

    @classmethod
    def from_components(
        cls,
        unet: torch.nn.Module,
        scheduler,
        vae: torch.nn.Module | None = None,
        text_encoder: torch.nn.Module | None = None,
        tokenizer: object | None = None,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        name: str = "model",
    ) -> DiffusionModels:
        """Bundle already-built components; any scheduler config is re-read as a ``DDIMScheduler``."""
        for m in (unet, vae, text_encoder):
            if m is not None:
                m.to(device, dtype).eval().requires_grad_(False)
        ddim = DDIMScheduler.from_config(scheduler.config)
        return cls(unet, ddim, vae, text_encoder, tokenizer, name)

    # ---- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell (8 for Stable Diffusion, 1 for pixel models)."""
        return self.codec.factor

    @property
    def native_size(self) -> int:
        """The side the model was configured for: its network's ``sample_size`` times the VAE factor (512 for SD 1.5)."""
        sample = self.unet.config.sample_size
        return int(max(sample) if isinstance(sample, (tuple, list)) else sample) * self.scale_factor

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this. A ``UNet2DConditionModel`` takes any latent size (it hands
        its skip connections' sizes to the upsamplers), so a latent model needs only the VAE factor, as in
        diffusers' pipelines; a pixel ``UNet2DModel`` needs its total downsampling."""
        if isinstance(self.unet, UNet2DConditionModel):
            return self.scale_factor
        return self.scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def schedule(self) -> Schedule:
        return Schedule.from_scheduler(self.scheduler)

    def steps(self, num_steps: int) -> Steps:
        """The DDIM sampling grid for ``num_steps`` (on a private scheduler copy: safe across threads)."""
        return make_steps(DDIMScheduler.from_config(self.scheduler.config), num_steps)

    def denoiser(self) -> Denoiser:
        """A fresh denoiser (NFE counter at 0) over this bundle's U-Net."""
        return Denoiser(unet_network(self.unet), self.schedule, self.scheduler.config.prediction_type)

    @property
    def conditional(self) -> bool:
        """True for text-conditional U-Nets (they take ``encoder_hidden_states``)."""
        return getattr(self.unet.config, "cross_attention_dim", None) is not None

    # ---- images <-> model space -------------------------------------------------------------
    def encode(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] -> model space (scaled VAE latents, or the image itself): a draw
        from the VAE posterior with ``generator`` (what diffusers img2img does), else its mean (what
        inversion-based methods use)."""
        return self.codec.encode(image.to(self.device, self.dtype), generator)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space -> images (B, 3, H, W), unclamped (about [-1, 1])."""
        return self.codec.decode(z)

    # ---- text -------------------------------------------------------------------------------
    def embed(self, prompt: str) -> torch.Tensor:
        """Text encoder hidden states (1, L, D) of ``prompt``, cached per prompt; long prompts are truncated."""
        if self.text_encoder is None or self.tokenizer is None:
            raise ValueError(f"model {self.name!r} is not text-conditional; it takes no prompt")
        if prompt not in self._prompt_cache:
            tok = self.tokenizer
            full = tok(prompt, truncation=False, verbose=False).input_ids  # we warn below, clearly
            if len(full) > tok.model_max_length:
                log.warning(
                    "prompt is %d tokens long; truncated to the text encoder's %d", len(full), tok.model_max_length
                )
            ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
            with torch.inference_mode(False), torch.no_grad():  # cached: must also serve autograd callers
                hidden = self.text_encoder(ids.input_ids.to(self.device))[0]
            if len(self._prompt_cache) >= 64:
                self._prompt_cache.pop(next(iter(self._prompt_cache)))
            self._prompt_cache[prompt] = hidden.to(self.dtype)
        return self._prompt_cache[prompt]

    def empty_condition(self) -> TextCondition | None:
        """The empty prompt (inversion, feature passes); None for unconditional pixel models."""
        return TextCondition(self.embed("")) if self.text_encoder is not None else None

    def condition(self, prompt: str, negative_prompt: str = "", guidance: float = 1.0) -> TextCondition | None:
        """The ``TextCondition`` for a prompt (``None`` for unconditional pixel models)."""
        if not self.conditional:
            return None
        uncond = self.embed(negative_prompt) if guidance != 1.0 else None
        return TextCondition(self.embed(prompt), uncond)
