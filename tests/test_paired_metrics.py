"""Metric additions: LPIPS from local backbone weights (never downloaded), CLIP similarity, FID/KID."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dit_translate import metrics


def test_lpips_reads_its_backbone_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    trunk = torchvision.models.alexnet().state_dict()
    save_file({k: v.contiguous() for k, v in trunk.items()}, str(tmp_path / "alexnet.safetensors"))
    model = metrics.load_lpips("alex", str(tmp_path / "alexnet.safetensors"))
    params = dict(model.net.named_parameters())
    assert torch.equal(params["slice1.0.weight"], trunk["features.0.weight"])
    assert torch.equal(params["slice5.10.weight"], trunk["features.10.weight"])
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    assert metrics.lpips_distance(x, x, model) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_distance(x, y, model) > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_lpips_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert metrics.lpips_backbone_file("vgg") == tmp_path / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(FileNotFoundError, match=r"torchvision.models.alexnet\(weights='IMAGENET1K_V1'\)"):
        metrics.load_lpips("alex")


def test_clip_similarity_and_feature_distances():
    def embed(images):
        return torch.nn.functional.normalize(images.flatten(1), dim=-1)

    a = torch.rand(4, 3, 8, 8)
    assert metrics.clip_image_similarity(a, a, embed) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(256, 8))
    assert metrics.fid_kid(real, real.copy())["fid"] == pytest.approx(0.0, abs=1e-6)
    same = metrics.fid_kid(real, rng.normal(size=(256, 8)))  # another sample of the same distribution
    shifted = metrics.fid_kid(real, rng.normal(size=(256, 8)) + 1.0)
    assert shifted["fid"] > 10 * same["fid"] and shifted["kid"] > 10 * abs(same["kid"])
    assert metrics.fid_kid(real, real[:1]) == pytest.approx(
        {"fid": float("nan"), "kid": float("nan")}, nan_ok=True)
    state = np.random.get_state()[1].copy()
    metrics.fid_kid(real, real)
    assert np.array_equal(np.random.get_state()[1], state)  # KID's subsets do not disturb the global RNG
