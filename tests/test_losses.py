"""AGG's losses: formulas on hand-made tensors, differentiable augmentations, CLIP direction and DINO losses."""

import pytest
import torch
import torch.nn.functional as F

from dit_translate.encoders import fit_square
from dit_translate.methods.losses import (
    TEMPLATES,
    clip_direction,
    image_guidance,
    noise_mix,
    random_crops,
    range_loss,
    structure_loss,
    text_embedding,
    text_guidance,
)


def test_structure_and_range_losses_on_hand_made_tensors():
    x = torch.tensor([[0.5, -2.0], [1.5, 0.0]])
    assert structure_loss(x, torch.zeros(2, 2)).item() == pytest.approx((0.5 + 2 + 1.5 + 0) / 4)
    assert range_loss(x).item() == pytest.approx((1.0**2 + 0.5**2) / 4)  # only -2 and 1.5 leave [-1, 1]
    assert range_loss(torch.rand(1, 3, 4, 4) * 2 - 1).item() == 0


def test_noise_mix_formula():
    x0, xt, a = torch.full((2,), 1.0), torch.full((2,), 3.0), torch.tensor(0.36)
    torch.testing.assert_close(noise_mix(x0, xt, a), 0.8 * x0 + 0.2 * xt)


def test_random_crops_identity_shape_determinism_and_gradient():
    img = torch.rand(2, 3, 20, 24, requires_grad=True)
    same = random_crops(img, 1, 16, scale=(1, 1), ratio=(1, 1), degrees=0, flip=False)
    torch.testing.assert_close(same, fit_square(img, 16), atol=1e-5, rtol=0)  # no augmentation = the square fit
    a = random_crops(img, 4, 16, torch.Generator().manual_seed(3))
    b = random_crops(img, 4, 16, torch.Generator().manual_seed(3))
    assert a.shape == (8, 3, 16, 16) and torch.equal(a, b)
    a.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0  # torch ops only: differentiable to the pixels


def test_clip_direction_is_the_documented_combination(clip, photo):
    trg, src = text_embedding(clip, "a comic drawing"), text_embedding(clip, "a photo")
    with torch.no_grad():
        img = clip.embed_image(photo)[0]
    expected = F.normalize(trg - 0.4 * src + 0.2 * img, dim=-1)
    got = clip_direction(clip, "a comic drawing", photo, "a photo")
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(clip_direction(clip, "a comic drawing", photo, source_image_weight=0.0), trg)
    assert len(TEMPLATES) > 1 and got.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_clip_loss_is_minus_weighted_cosine_over_crops_and_averaged_over_models(clip, photo):
    single = text_guidance([clip], "a comic drawing", photo, weight=10.0, crops=3)
    img = photo.clone().requires_grad_(True)
    loss = single(img, torch.Generator().manual_seed(0))
    crops = random_crops(photo, 3, clip.size, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = -10.0 * (clip.embed_image(crops) @ single.directions[0]).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=0)
    loss.backward()
    assert img.grad.abs().sum() > 0
    ensemble = text_guidance([clip, clip], "a comic drawing", photo, weight=10.0, crops=3)
    g = torch.Generator().manual_seed(0)  # each member draws its own crops from the same generator in turn
    parts = [single(photo, g), single(photo, g)]
    torch.testing.assert_close(ensemble(photo, torch.Generator().manual_seed(0)), sum(parts) / 2, atol=1e-5, rtol=0)


def test_dino_loss_is_zero_at_the_style_image_and_grows_away_from_it(dino, photo):
    style = torch.rand(1, 3, 32, 32) * 2 - 1
    loss_fn = image_guidance(dino, style, weight=200.0, pixel_weight=200.0)
    assert loss_fn(style).item() == pytest.approx(0.0, abs=1e-6)
    img = photo.clone().requires_grad_(True)
    loss = loss_fn(img)
    feats = dino.cls_token(photo)
    expected = 200 * F.mse_loss(feats, dino.cls_token(style)) + 200 * F.mse_loss(photo, style)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert img.grad.abs().sum() > 0
    no_pixels = image_guidance(dino, style, pixel_weight=0.0)
    assert no_pixels(photo).item() == pytest.approx(200 * F.mse_loss(feats, dino.cls_token(style)).item(), rel=1e-5)
