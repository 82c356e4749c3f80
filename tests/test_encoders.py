"""Guidance encoders: differentiable preprocessing, local-dir loading, untrained fallbacks, offline errors, caching."""

import dataclasses

import pytest
import torch

from dit_translate import untrained
from dit_translate.encoders import IMAGENET_MEAN, fit_square, normalize
from dit_translate.errors import MissingWeightsError
from dit_translate.guidance import Guidance, guidance_availability, load_clip, load_dino
from dit_translate.presets import GuidanceSpec, load_preset
from dit_translate.store import ModelStore
from dit_translate.untrained import build_random_clip, build_random_dino


def _preset(**guidance):
    return dataclasses.replace(load_preset("tiny"), name="mine", guidance=GuidanceSpec(**guidance))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Build untrained fallbacks into a throwaway cache instead of ~/.cache/dit-translate."""
    monkeypatch.setattr(untrained, "UNTRAINED_CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def test_fit_square_crops_the_centre_and_is_differentiable():
    img = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6).requires_grad_(True)
    torch.testing.assert_close(fit_square(img, 4), img[..., :, 1:5])
    out = fit_square(img, 8)
    assert out.shape == (1, 2, 8, 8)
    out.sum().backward()
    assert img.grad[..., 0].abs().sum() == 0 and img.grad[..., 1:5].abs().sum() > 0  # side columns cropped away


def test_normalize_maps_minus_one_one_to_mean_std_units():
    x = torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = normalize(x, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([-2.0, 2.0]))


def test_local_dir_models_load_with_their_own_preprocessing(tmp_path):
    clip_dir, dino_dir = build_random_clip(tmp_path / "clip"), build_random_dino(tmp_path / "dino")
    preset = _preset(clip=(f"local-dir:{clip_dir}",), dino=f"local-dir:{dino_dir}")
    clip, untrained = load_clip(preset.guidance.clip[0], preset)
    assert not untrained and clip.size == 64 and clip.mean[0] == pytest.approx(0.48145466)
    text = clip.embed_text(["a cat", "a dog"])
    assert text.shape == (2, 64) and torch.allclose(text.norm(dim=-1), torch.ones(2))
    img = (torch.rand(1, 3, 40, 56) * 2 - 1).requires_grad_(True)
    clip.embed_image(img).sum().backward()
    assert img.grad.abs().sum() > 0
    dino, untrained = load_dino(preset.guidance.dino, preset)
    assert not untrained and dino.size == 64 and dino.mean == IMAGENET_MEAN
    assert dino.cls_token(img).shape == (1, 64)


def test_missing_local_dir_uses_the_untrained_fallback_once(tmp_path, cache):
    preset = _preset(clip=(f"local-dir:{tmp_path}/none",), dino=f"local-dir:{tmp_path}/none2", fallback="random-tiny")
    assert "UNTRAINED random tiny clip" in guidance_availability(preset).detail
    assert guidance_availability(preset).untrained
    guidance = Guidance(preset)
    clips, dino = guidance.clips(), guidance.dino()
    assert len(clips) == 1 and dino.size == 64
    assert guidance.untrained == {preset.guidance.clip[0], preset.guidance.dino}
    weights = cache / "tiny-clip-untrained" / "open_clip_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    Guidance(preset).clips()
    assert weights.stat().st_mtime_ns == stamp  # built once, then reused
    assert guidance.clips() is clips  # cached on the bundle


def test_missing_local_dir_without_fallback_is_a_clear_error(tmp_path):
    preset = _preset(clip=(f"local-dir:{tmp_path}/none",))
    assert not guidance_availability(preset).ok
    with pytest.raises(MissingWeightsError, match=r"preset 'mine': guidance clip folder .*none is missing"):
        Guidance(preset).clips()


@pytest.mark.parametrize("kind", ["clip", "dino"])
def test_offline_hub_guidance_fails_fast_naming_preset_id_and_fetch(kind):
    preset = load_preset("sd15")
    guidance = ModelStore(device="cpu").guidance(preset)
    with pytest.raises(MissingWeightsError) as err:
        guidance.clips() if kind == "clip" else guidance.dino()
    msg = str(err.value)
    repo = "timm/vit_base_patch32_clip_224.openai" if kind == "clip" else "timm/vit_base_patch8_224.dino"
    assert "preset 'sd15'" in msg and repo in msg and f"hf download {repo}" in msg and "HF_HUB_OFFLINE=1" in msg
    assert not guidance_availability(preset).ok


@pytest.mark.parametrize(
    "guidance,match",
    [
        ({"clip": ("ViT-B-32/nope",)}, "unknown open_clip pretrained tag 'nope'"),
        ({"clip": ("ViT-Nope/openai",)}, "unknown open_clip architecture"),
        ({"dino": "vit_base_patch8_224.nope"}, "Invalid pretrained tag"),
        ({"dino": "not_a_model.dino"}, "unknown timm model"),
    ],
)
def test_unknown_hub_guidance_ids_are_value_errors(tmp_path, guidance, match):
    g = Guidance(_preset(**guidance))
    with pytest.raises(ValueError, match=match):
        g.clips() if "clip" in guidance else g.dino()


def test_guidance_needs_the_models_it_is_asked_for(tmp_path):
    with pytest.raises(ValueError, match="names no DINO model"):
        Guidance(_preset(clip=("ViT-B-32/openai",))).dino()
    no_table = dataclasses.replace(load_preset("tiny"), guidance=None)
    with pytest.raises(ValueError, match="has no \\[guidance\\] table"):
        ModelStore(device="cpu").guidance(no_table)


def test_store_keeps_one_presets_guidance(cache):
    store = ModelStore(device="cpu")
    tiny = store.guidance("tiny")
    assert store.guidance("tiny") is tiny and tiny.clips() is store.guidance("tiny").clips()
    assert store.guidance("sd15") is not tiny and store.guidance("tiny") is not tiny
