"""The core behind the app: CLIP scores, honest notes, model cards, out-of-memory detection (no gradio)."""

import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dit_translate import about, api, metrics, runtime, untrained
from dit_translate.encoders import fit_square, normalize
from dit_translate.guidance import load_clip
from dit_translate.methods.common import TranslationResult
from dit_translate.presets import GuidanceSpec, load_preset
from dit_translate.store import ModelStore
from dit_translate.untrained import build_random_clip


def _preset(**guidance):
    return dataclasses.replace(load_preset("tiny"), name="mine", guidance=GuidanceSpec(**guidance))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_random_clip(tmp_path_factory.mktemp("clip") / "clip", seed=3)


@pytest.fixture(scope="module")
def clip(clip_dir):
    preset = _preset(clip=(f"local-dir:{clip_dir}",))
    return load_clip(preset.guidance.clip[0], preset)[0]


def _raw_embeddings(clip, images, texts):
    """The open_clip model's own embeddings, computed here without ``ClipEncoder.embed_*``."""
    with torch.no_grad():
        x = normalize(fit_square(images.float(), clip.size), clip.mean, clip.std)
        return clip.model.encode_image(x).numpy(), clip.model.encode_text(clip.tokenizer(texts)).numpy()


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_clip_text_score_is_the_cosine_of_the_encoders_embeddings(clip, photo):
    batch = torch.cat([photo, photo.flip(-1).clamp(-1, 1) * 0.5])
    img, txt = _raw_embeddings(clip, batch, ["a comic drawing"])
    scores = metrics.clip_text_score(batch, "a comic drawing", clip)
    assert scores == pytest.approx([_cos(img[0], txt[0]), _cos(img[1], txt[0])], abs=1e-5)


def test_clip_direction_score_compares_the_image_change_with_the_text_change(clip, photo):
    out = (photo * 0.3 + 0.2).clamp(-1, 1)
    img, txt = _raw_embeddings(clip, torch.cat([out, photo]), ["a comic drawing", "a photo"])
    unit = img / np.linalg.norm(img, axis=1, keepdims=True)
    tunit = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    expected = _cos(unit[0] - unit[1], tunit[0] - tunit[1])
    scores = metrics.clip_direction_score(torch.cat([out, photo]), photo, "a comic drawing", "a photo", clip)
    assert scores[0] == pytest.approx(expected, abs=1e-5)
    assert scores[1] == 0.0  # the source itself did not move


def test_clip_scores_use_the_presets_first_guidance_clip(clip, clip_dir, photo):
    out = (photo * 0.5).clamp(-1, 1)
    preset = _preset(clip=(f"local-dir:{clip_dir}",))
    scores = api.clip_scores([out, photo], "a comic drawing", photo, source_text="a photo", preset=preset,
                             store=ModelStore("cpu"))
    assert scores.model == f"local-dir:{clip_dir}" and not scores.untrained and not scores.missing
    assert scores.text == pytest.approx(metrics.clip_text_score(torch.cat([out, photo]), "a comic drawing", clip))
    assert scores.direction[0] == pytest.approx(
        metrics.clip_direction_score(out, photo, "a comic drawing", "a photo", clip)[0])


def test_clip_scores_say_when_the_clip_is_an_untrained_fallback_or_missing(tmp_path, monkeypatch, photo):
    monkeypatch.setattr(untrained, "UNTRAINED_CACHE", tmp_path / "cache")
    store = ModelStore("cpu")
    fallback = _preset(clip=(f"local-dir:{tmp_path / 'nope'}",), fallback="random-tiny")
    scores = api.clip_scores([photo], "a comic drawing", photo, preset=fallback, store=store)
    assert scores.untrained and scores.direction is None and len(scores.text) == 1
    assert about.untrained_suffix(scores.untrained) == " (UNTRAINED CLIP)"
    no_clip = _preset(dino="local-dir:/nowhere", fallback="random-tiny")
    scores = api.clip_scores([photo], "a comic drawing", photo, preset=no_clip, store=store)
    assert scores.model is None and "names no CLIP model" in scores.missing
    note = about.result_note(TranslationResult("sdedit", photo, 1.0, 2, extras={"preset": "sd15"}), scores)
    assert note == f"No CLIP scores: {scores.missing}"


def _result(method="sdedit", **extras):
    return TranslationResult(method, torch.zeros(1, 3, 8, 8), 1.0, 2, extras=extras)


SD15_HINT = "hf download stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_result_notes_are_honest_about_tiny_and_untrained_weights():
    untrained = about.result_note(_result(preset="tiny", untrained=True,
                                          untrained_guidance=["local-dir:/x/assets/tiny/clip"]))
    assert "UNTRAINED random weights" in untrained and "UNTRAINED random clip" in untrained
    assert "choose preset `sd15`" in untrained and SD15_HINT in untrained
    tiny = about.result_note(_result(preset="tiny", untrained=False))
    assert "tiny world" in tiny and "UNTRAINED" not in tiny and SD15_HINT in tiny
    paired = about.result_note(_result("dit", preset="tiny-dit", untrained=False, clip_untrained=True))
    assert "UNTRAINED random clip" in paired and "presets/face2comics.toml" in paired and SD15_HINT not in paired
    assert about.result_note(_result(preset="sd15", untrained=False)) == ""


def test_preset_summary_names_the_device_and_flags_the_tiny_world():
    text = about.preset_summary("tiny", "cpu")
    assert text.startswith("**tiny**") and "Device: `cpu`" in text and "tiny world" in text and SD15_HINT in text
    assert "UNTRAINED" in text or "local folder" in text
    assert about.preset_summary("nope", "cpu").startswith("**Preset error:** unknown preset 'nope'")


def test_preset_summary_flags_an_untrained_fallback(tiny_dit_without_weights):
    text = about.preset_summary(str(tiny_dit_without_weights), "cpu")
    assert "runs on **UNTRAINED random weights**" in text
    assert "UNTRAINED" not in about.preset_summary("tiny-dit", "cpu")  # the shipped tiny DiT
    assert [name for _, name in about.preset_options()] == ["sd15", "sd21-base", "tiny"]


def test_about_lists_every_method_with_its_paper():
    text = about.methods_markdown()
    for url in ("https://arxiv.org/abs/2108.01073", "https://doi.org/10.1109/JAS.2024.124800",
                "https://arxiv.org/abs/2211.12572", "https://arxiv.org/abs/2306.04396",
                "https://arxiv.org/abs/2505.16001", "https://arxiv.org/abs/2212.09748"):
        assert f"]({url})" in text
    assert all(len(m.summary) == 2 for m in about.METHODS)
    presets = about.presets_markdown()
    assert all(f"**{name}**" in presets for name in ("tiny", "sd15", "tiny-dit", "face2comics"))


def test_store_status_says_what_is_loaded_and_where():
    store = ModelStore("cpu")
    assert about.store_status(store) == "Device: `cpu` (float32). Loaded now: nothing yet (models load on first use)."
    store.guidance("tiny")  # the bundle is created; its models load on first use
    assert store.loaded() == {"guidance": "tiny"}
    assert about.store_status(store).endswith("Loaded now: guidance: `tiny`.")


def test_examples_cache_key_follows_the_weights_state(monkeypatch):
    key = about.examples_cache_key(["tiny", "tiny-dit"])
    assert key == about.examples_cache_key(["tiny", "tiny-dit"]) and len(key) == 12
    monkeypatch.setattr(about, "availability", lambda preset: SimpleNamespace(detail="trained weights"))
    assert about.examples_cache_key(["tiny", "tiny-dit"]) != key


@pytest.mark.parametrize(
    "text,expected",
    [
        ("---\nlicense: cc0-1.0\ntags: [a, b]\n---\n# Title\n\nbody\n", "# Title\n\nbody\n"),
        ("\ufeff---\r\nlicense: x\r\n---\r\n# T\r\n", "# T\r\n"),
        ("# No front matter\n\n---\n\nrule above\n", "# No front matter\n\n---\n\nrule above\n"),
    ],
)
def test_strip_front_matter(text, expected):
    assert about.strip_front_matter(text) == expected


def test_model_card_keeps_only_images_inside_its_folder(tmp_path):
    folder = tmp_path / "sd"
    folder.mkdir()
    (folder / "loss_curve.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"png")
    (folder / "README.md").write_text(
        "---\nlicense: cc0-1.0\n---\n# Tiny SD\n\n![loss curves](loss_curve.png)\n\nAfter.\n"
        "![remote](https://example.com/x.png) ![gone](missing.png) ![](../secret.png)\nEnd.\n")
    parts = about.model_card(folder)
    assert parts == ["# Tiny SD\n\n", folder / "loss_curve.png",
                     "\n\nAfter.\n*(remote)* *(gone)* *(image)*\nEnd.\n"]
    assert about.model_card(tmp_path / "dit") is None


def test_tiny_model_cards_are_the_folders_the_presets_load():
    folders = [folder for _, folder in about.tiny_model_cards()]
    assert [f.parts[-2:] for f in folders] == [("tiny", "sd"), ("tiny", "clip"), ("tiny", "dit"), ("tiny", "dino")]
    assert all((f / "README.md").is_file() for f in folders)
    assert str(folders[0]) == load_preset("tiny").model and str(folders[2]) == load_preset("tiny-dit").model


@pytest.mark.parametrize(
    "error,oom",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"), True),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),
    ],
)
def test_is_out_of_memory(error, oom):
    assert runtime.is_out_of_memory(error) is oom


def test_the_core_the_app_uses_never_imports_gradio():
    code = "import sys, dit_translate.about, dit_translate.api; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
