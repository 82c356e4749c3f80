"""The correction paper's evaluation protocol (its released ``metrics_clip_ssim.py``), for eval and benchmarks.

For a source photo and a translated image:

- ``clip_image``: cosine of the CLIP ViT-L/14 image features (transformers ``CLIPModel.get_image_features``) of
  the source and of the output;
- ``clip_text``: cosine of the output's image features with the CLIP text embedding of ``style + caption``,
  where ``caption`` is BLIP-large's caption of the source (``BlipForConditionalGeneration.generate``) and
  ``style`` is "cartoon style of " (COCO, ImageNet) or "realistic style of " (ImageNet-R); without a
  captioner the caption is the user's prompt, and the result says so;
- ``ssim_gray``: SSIM of the grey source and the grey output resized to the source's size (ITU-R 601 luma,
  bilinear; the released code uses OpenCV's, with the same weights).

Weights load from the Hugging Face cache (or the Hub when online); offline without them ``load_protocol``
raises ``MissingWeightsError`` with the command that fetches them. Images are PIL RGB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from dit_translate.errors import MissingWeightsError
from dit_translate.runtime import hub_offline

CLIP_ID = "openai/clip-vit-large-patch14"
BLIP_ID = "Salesforce/blip-image-captioning-large"
STYLES = {"cartoon": "cartoon style of ", "realistic": "realistic style of "}


def _loading(what: str, ref: str, load: Callable[[bool], Any]) -> Any:
    """``load(local_files_only)`` for ``ref`` (a local folder, the HF cache, or online the Hub); one error else."""
    local = Path(ref).is_dir()
    try:
        return load(local or hub_offline())
    except OSError as e:
        offline = ", offline" if hub_offline() else ""
        where = f"the folder {ref}" if local else f"{ref!r} (not in the Hugging Face cache{offline})"
        raise MissingWeightsError(
            f"the paper protocol's {what} cannot be loaded from {where}; fetch it with `hf download {ref}` "
            f"or pass a local folder ({type(e).__name__})") from None


@dataclass
class Protocol:
    """The loaded judges: a CLIP model and processor, and optionally a BLIP captioner and processor."""

    clip: Any
    clip_processor: Any
    blip: Any = None
    blip_processor: Any = None
    name: str = CLIP_ID

    @torch.no_grad()
    def caption(self, image: Image.Image, max_new_tokens: int = 30) -> str:
        """BLIP's caption of ``image`` (greedy, as ``generate`` defaults)."""
        inputs = self.blip_processor(images=image.convert("RGB"), return_tensors="pt")
        out = self.blip.generate(**inputs, max_new_tokens=max_new_tokens)
        return self.blip_processor.decode(out[0], skip_special_tokens=True).strip()

    @torch.no_grad()
    def score(self, source: Image.Image, output: Image.Image, *, prompt: str = "", style: str = "cartoon"
              ) -> dict[str, Any]:
        """The protocol's three numbers for one pair, with the text that was scored and where it came from."""
        source, output = source.convert("RGB"), output.convert("RGB")
        if self.blip is not None:
            caption, origin = self.caption(source), "blip"
        else:
            caption, origin = prompt, "prompt (no captioner)"
        text = STYLES[style] + caption
        pixels = self.clip_processor(images=[source, output], return_tensors="pt")
        feats = _projected(self.clip.get_image_features(**pixels))
        tokens = self.clip_processor(text=[text], return_tensors="pt", padding=True, truncation=True)
        text_emb = _projected(self.clip.get_text_features(**tokens))
        cos = torch.nn.functional.cosine_similarity
        return {"clip_image": float(cos(feats[0:1], feats[1:2])), "clip_text": float(cos(feats[1:2], text_emb)),
                "ssim_gray": ssim_gray(source, output), "text": text, "caption_from": origin, "clip": self.name}


def _projected(out: Any) -> torch.Tensor:
    """CLIP's projected features: transformers < 5 returns the tensor, 5 a model output holding it as pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def ssim_gray(source: Image.Image, output: Image.Image) -> float:
    """SSIM of the uint8 grey images, the output resized (bilinear) to the source's size."""
    a = np.asarray(source.convert("L"))
    b = np.asarray(output.convert("RGB").resize(source.size, Image.BILINEAR).convert("L"))
    return float(structural_similarity(a, b, data_range=255))


def load_protocol(clip: str = CLIP_ID, blip: str | None = BLIP_ID) -> Protocol:
    """The judges from hub ids or local folders; ``blip=None`` scores against the prompt instead of a caption."""
    from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPModel, CLIPProcessor

    clip_model = _loading("CLIP model", clip, lambda only: CLIPModel.from_pretrained(
        clip, local_files_only=only, use_safetensors=True)).eval()
    clip_processor = _loading("CLIP processor", clip, lambda only: CLIPProcessor.from_pretrained(
        clip, local_files_only=only))
    blip_model = blip_processor = None
    if blip is not None:
        blip_model = _loading("BLIP captioner", blip, lambda only: BlipForConditionalGeneration.from_pretrained(
            blip, local_files_only=only, use_safetensors=True)).eval()
        blip_processor = _loading("BLIP processor", blip, lambda only: BlipProcessor.from_pretrained(
            blip, local_files_only=only))
    return Protocol(clip_model, clip_processor, blip_model, blip_processor, name=clip)
