"""The real presets, rehearsed offline from a Hugging Face cache built at test time (issue 17).

For each hub id a Stable Diffusion preset names, the cache holds ``models--ORG--NAME/refs/main`` and
``snapshots/REV/`` in the real repo's layout: small random weights under the pipeline's component configs, plus
the files the loader must never touch (``.bin`` pickles, a ``.ckpt``, ``fp16`` variants holding other weights, the
safety checker). Every editing method then runs offline through the CLI and the app's handler, and must equal
the same snapshot folder given with ``--model``. The guidance models, whose architecture the libraries fix
(open_clip ViT-B-32, timm DINO ViT-B/8), get full-size random weights in a slow test.
"""

import json
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from dit_translate.cli import main
from dit_translate.untrained import build_random_sd

REV = "0123456789abcdef0123456789abcdef01234567"
SD_REPOS = {"sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd21-base": "stabilityai/stable-diffusion-2-1-base"}
PHOTO = "assets/examples/chelsea.jpg"
KNOBS = ["--steps", "4", "--strength", "0.5", "--size", "32", "--seed", "1"]


def _snapshot(cache, repo: str):
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REV)
    return root / "snapshots" / REV


def _decoys(snap) -> None:
    """What the real repos also hold: pickles, a checkpoint, fp16 variants, the safety checker (never loaded)."""
    index = json.loads((snap / "model_index.json").read_text())
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"])
    (snap / "model_index.json").write_text(json.dumps(index))
    for part, name in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        (snap / part / f"{name}.bin").write_bytes(b"not a pickle: loading this would fail")
        weights = load_file(snap / part / f"{name}.safetensors")
        save_file({k: torch.zeros_like(v) for k, v in weights.items()}, snap / part / f"{name}.fp16.safetensors")
    (snap / "v1-5-pruned-emaonly.ckpt").write_bytes(b"not a checkpoint")
    (snap / "safety_checker").mkdir()
    (snap / "safety_checker" / "pytorch_model.bin").write_bytes(b"not a pickle")
    (snap / "feature_extractor").mkdir()
    (snap / "feature_extractor" / "preprocessor_config.json").write_text("{}")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf-cache")
    for i, repo in enumerate(SD_REPOS.values()):
        snap = _snapshot(cache, repo)
        build_random_sd(snap, seed=i)
        _decoys(snap)
    return cache


@pytest.fixture
def offline_cache(hub_cache, monkeypatch):
    import huggingface_hub.constants

    from dit_translate import store

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(store, "_default", None)  # a fresh process-wide store
    return hub_cache


def _cli_png(tmp_path, name, args):
    out = tmp_path / f"{name}.png"
    assert main([*args, "--out", str(out)]) == 0
    with Image.open(out) as im:
        return torch.from_numpy(__import__("numpy").asarray(im.convert("RGB")).copy())


@pytest.mark.parametrize("preset", list(SD_REPOS))
@pytest.mark.parametrize("method", ["sdedit", "correct", "pnp"])
def test_every_method_runs_offline_from_the_cache_as_from_the_folder(offline_cache, tmp_path, preset, method):
    snap = offline_cache / f"models--{SD_REPOS[preset].replace('/', '--')}" / "snapshots" / REV
    edit = ["edit", "--method", method, "--image", PHOTO, "--prompt", "a comic drawing", *KNOBS]
    if method == "pnp":
        edit += ["--inversion-steps", "8"]
    from_cache = _cli_png(tmp_path, "cache", [*edit, "--preset", preset])
    from_folder = _cli_png(tmp_path, "folder", [*edit, "--preset", preset, "--model", str(snap)])
    assert torch.equal(from_cache, from_folder)
    assert from_cache.float().std() > 1  # a real image, not a constant: the zero fp16 decoys were not loaded


def test_the_apps_edit_handler_runs_the_cached_presets(offline_cache):
    import app

    for preset in SD_REPOS:
        gallery, table, files, note = app.run_editing(PHOTO, "a comic drawing", preset, 0.5, 4, 5.0, 0,
                                                      ["sdedit", "correct"], "released", 8, 32)
        assert [row[0] for row in table["data"]][:2] == ["SDEdit", "Correction (released)"]
        assert len(files) == 2 and "tiny world" not in note.lower()


def test_a_repo_missing_from_the_cache_names_the_download(offline_cache, tmp_path, capsys):
    shutil.rmtree(offline_cache / "models--stabilityai--stable-diffusion-2-1-base" / "refs")
    try:
        assert main(["edit", "--method", "sdedit", "--image", PHOTO, "--prompt", "a comic", "--preset", "sd21-base",
                     "--out", str(tmp_path / "o.png")]) == 2
        err = capsys.readouterr().err
        assert "not in the Hugging Face cache" in err and "hf download stabilityai/stable-diffusion-2-1-base" in err
    finally:
        (offline_cache / "models--stabilityai--stable-diffusion-2-1-base" / "refs").mkdir()
        (offline_cache / "models--stabilityai--stable-diffusion-2-1-base" / "refs" / "main").write_text(REV)


@pytest.mark.slow
def test_agg_on_sd15_loads_full_size_guidance_models_from_the_cache(offline_cache, tmp_path):
    """open_clip ViT-B-32 and timm ViT-B/8 at their real sizes (random weights), in their hub repos' layout."""
    import open_clip
    import timm

    clip_snap = _snapshot(offline_cache, "timm/vit_base_patch32_clip_224.openai")
    clip_snap.mkdir(parents=True)
    save_file(open_clip.create_model("ViT-B-32").state_dict(), clip_snap / "open_clip_model.safetensors")
    (clip_snap / "open_clip_pytorch_model.bin").write_bytes(b"not a pickle")
    (clip_snap / "open_clip_config.json").write_text("{}")
    dino_snap = _snapshot(offline_cache, "timm/vit_base_patch8_224.dino")
    dino_snap.mkdir(parents=True)
    dino = timm.create_model("vit_base_patch8_224.dino", pretrained=False, num_classes=0)
    save_file(dino.state_dict(), dino_snap / "model.safetensors")
    (dino_snap / "pytorch_model.bin").write_bytes(b"not a pickle")
    (dino_snap / "config.json").write_text(json.dumps({"architecture": "vit_base_patch8_224", "num_classes": 0}))
    for mode in (["--text", "a comic drawing"], ["--style-image", "assets/examples/coffee.jpg"]):
        out = tmp_path / "agg.png"
        assert main(["guide", "--image", PHOTO, *mode, "--preset", "sd15", "--steps", "10", "--size", "32",
                     "--out", str(out)]) == 0
        assert out.stat().st_size > 0
