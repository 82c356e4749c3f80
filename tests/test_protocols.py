"""The correction paper's protocol (metrics_clip_ssim.py) on tiny random CLIP and BLIP models saved in the hub
layout: each number against its definition, the caption path, and the offline error."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import structural_similarity

from dit_translate.errors import MissingWeightsError
from dit_translate.protocols import load_protocol, ssim_gray
from dit_translate.tokenizer import write_clip_tokenizer

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "cat", "dog", "the", "on"]


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    """Folders ``clip`` (CLIPModel + CLIPProcessor) and ``blip`` (BlipForConditionalGeneration + BlipProcessor)."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    root = tmp_path_factory.mktemp("judges")
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(root / "clip-tokenizer"))
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2}
    CLIPModel(CLIPConfig(text_config={"vocab_size": tokenizer.vocab_size, "max_position_embeddings": 77, **small},
                         vision_config={"image_size": 32, "patch_size": 8, **small}, projection_dim=16)
              ).save_pretrained(root / "clip")
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(root / "clip")
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    text = {"vocab_size": len(WORDS), "max_position_embeddings": 40, "bos_token_id": 5, "pad_token_id": 0,
            "sep_token_id": 3, "eos_token_id": 3, "encoder_hidden_size": 32, **small}
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config={"image_size": 32, "patch_size": 8, **small},
                                            projection_dim=16)).save_pretrained(root / "blip")
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=BertTokenizer(str(root / "vocab.txt"))).save_pretrained(root / "blip")
    return root


def _pair():
    source = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB")
    return source, source.resize((96, 64), Image.BICUBIC).rotate(8)


def test_scores_follow_the_released_definitions(judges):
    protocol = load_protocol(str(judges / "clip"), str(judges / "blip"))
    source, output = _pair()
    got = protocol.score(source, output, style="cartoon")
    caption = protocol.caption(source)
    assert got["caption_from"] == "blip" and got["text"] == "cartoon style of " + caption
    assert set(caption.split()) <= set(WORDS)  # decoded from the captioner's own vocabulary
    # oracle: the model's forward pass (image_embeds / text_embeds, both unit-norm) instead of get_*_features
    with torch.no_grad():
        inputs = protocol.clip_processor(text=[got["text"]], images=[source, output], return_tensors="pt", padding=True)
        out = protocol.clip(**inputs)
    img, txt = out.image_embeds, out.text_embeds
    assert got["clip_image"] == pytest.approx(float(img[0] @ img[1]), abs=1e-5)
    assert got["clip_text"] == pytest.approx(float(img[1] @ txt[0]), abs=1e-5)
    same = protocol.score(source, source)
    assert same["clip_image"] == pytest.approx(1.0, abs=1e-5) and same["ssim_gray"] == pytest.approx(1.0)


def test_grey_ssim_resizes_the_output_to_the_source():
    source, output = _pair()
    a = np.asarray(source.convert("L"))
    b = np.asarray(output.resize(source.size, Image.BILINEAR).convert("L"))
    assert ssim_gray(source, output) == pytest.approx(structural_similarity(a, b, data_range=255))
    assert ssim_gray(source, output) < 0.9


def test_without_a_captioner_the_prompt_is_scored_and_labelled(judges):
    protocol = load_protocol(str(judges / "clip"), blip=None)
    source, output = _pair()
    got = protocol.score(source, output, prompt="a comic drawing", style="realistic")
    assert got["text"] == "realistic style of a comic drawing" and got["caption_from"] == "prompt (no captioner)"


def test_missing_weights_offline_name_the_model_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError, match=r"CLIP model cannot be loaded from 'openai/clip-vit-large-patch14'"
                                                  r" \(not in the Hugging Face cache, offline\).*hf download"):
        load_protocol()
