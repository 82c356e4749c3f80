"""Behaviour of the shipped tiny world on the held-out photos (chelsea, coffee), re-measured with the
functions that write the model cards (``dit_translate.tiny.measure``): the quality bars of the tiny-world
issue, each with the margin stated next to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
from diffusers import AutoencoderKL

from dit_translate.encoders import ClipEncoder
from dit_translate.store import ModelStore
from dit_translate.tiny import measure as E

ROOT = Path(__file__).resolve().parents[1] / "assets" / "tiny"
CLIP_MARGIN = 0.02
"""How much lower the correction's CLIP score may be than SDEdit's (cosines under the tiny CLIP)."""
AGG_SSIM_FLOOR = 0.4
"""The lowest acceptable mean SSIM of AGG's result to its source."""


@pytest.fixture(scope="module")
def store() -> ModelStore:
    return ModelStore()


def test_the_tiny_world_is_shipped_trained(store):
    for folder in ("sd/unet", "sd/vae", "sd/text_encoder", "clip", "dit/model"):
        assert any((ROOT / folder).glob("*.safetensors")), f"assets/tiny/{folder} holds no weights"
    assert not store.get("tiny").untrained
    guidance = store.guidance("tiny")
    guidance.clips()
    assert not guidance.untrained
    paired = store.get_paired("tiny-dit").models
    assert not paired.untrained and not paired.clip_untrained


def test_vae_reconstructs_held_out_photos_above_24_db():
    psnr = E.vae_psnr(AutoencoderKL.from_pretrained(ROOT / "sd" / "vae").eval())
    assert np.mean(list(psnr.values())) >= 24.0, psnr


def test_clip_tells_the_style_of_held_out_crops():
    name = f"local-dir:{ROOT / 'clip'}"
    clip = ClipEncoder.from_model(open_clip.create_model(name), open_clip.get_tokenizer(name), name)
    retrieval = E.style_retrieval(clip)
    assert retrieval["style_only"] >= 0.90, retrieval


@pytest.fixture(scope="module")
def dit_scores() -> dict[str, dict[str, float]]:
    sources, targets = E.heldout_pairs()
    return E.dit_vs_sdedit(ROOT / "dit", ROOT / "sd", sources, targets)[0]


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_dit_is_closer_to_the_comic_than_sdedit(dit_scores, metric):
    assert dit_scores["dit"][metric] > dit_scores["sdedit"][metric], dit_scores


@pytest.mark.parametrize("metric", ["psnr", "ssim"])
def test_dit_is_closer_to_the_comic_than_the_photo(dit_scores, metric):
    assert dit_scores["dit"][metric] > dit_scores["photo"][metric], dit_scores


@pytest.mark.parametrize("strength", [0.5, 0.7])
def test_correction_keeps_more_structure_than_sdedit_at_a_similar_style(store, strength):
    row = E.editing_comparison(store, strengths=(strength,))[f"{strength:g}"]
    assert row["correct"]["ssim"] > row["sdedit"]["ssim"], row
    assert row["correct"]["clip"] >= row["sdedit"]["clip"] - CLIP_MARGIN, row


def test_agg_moves_towards_the_text_and_keeps_the_layout(store):
    scores = E.agg_comparison(store)
    assert scores["agg"]["clip"] > scores["ddim"]["clip"], scores
    assert scores["agg"]["ssim"] >= AGG_SSIM_FLOOR, scores
