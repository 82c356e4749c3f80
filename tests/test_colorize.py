"""Colourisation (issue 18, first slice): the colour core, the metrics, the pix2pix L -> ab colouriser,
``api.colorize`` and ``python -m dit_translate colorize``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color
from skimage import data as skdata

from dit_translate import api, colour, metrics
from dit_translate.cli import main
from dit_translate.paired.checkpoint import write_checkpoint
from dit_translate.paired.pix2pix import UNetGenerator, colorize_ab
from dit_translate.presets import load_preset
from dit_translate.store import ModelStore

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "assets" / "tiny" / "colorize-pix2pix"
PHOTOS = Path(os.environ.get("DIT_TRANSLATE_PHOTOS", "/work/tiny-runs/photos"))
LOCK_TOLERANCE = 1e-3  # L units (0..100): the float64 round trip; measured 4e-8 on chelsea, at most 3e-4 on
# held-out photos with pure whites (there D65 grey rounds to RGB 1 + 1e-6 and is clipped); an 8-bit step is 0.4


def _odd_photo() -> np.ndarray:
    return skdata.chelsea()[:299, :451]  # full, odd size


def _smooth_ab(h: int, w: int, seed: int = 0, amplitude: float = 90.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-amplitude, amplitude, (h, w, 2))


# ---- the colour core ---------------------------------------------------------------------------
@pytest.mark.parametrize("space", colour.SPACES)
def test_recombine_keeps_the_input_luma_exactly_at_full_odd_size(space):
    photo = _odd_photo()
    out = colour.recombine(photo, _smooth_ab(37, 55) / (1 if space == "lab" else 300), 1.0, space=space)
    assert out.shape == photo.shape
    assert out.min() >= 0 and out.max() <= 1
    assert colour.lab_lock_error(photo, out, space) < LOCK_TOLERANCE
    assert metrics.colourfulness(out) > 10  # the (partly out-of-gamut, so shrunk) colours are there


def test_colorfulness_zero_is_grey_and_one_keeps_ab():
    photo = _odd_photo()
    grey = colour.recombine(photo, colour.chroma(photo), 0.0)
    assert np.abs(colour.chroma(grey)).max() < 1e-6
    assert metrics.colourfulness(grey) < 0.01  # CIELAB neutral is D65 white: R = G = B to ~1e-5
    assert np.allclose(grey, colour.to_grey(photo), atol=1e-9)
    same = colour.recombine(photo, colour.chroma(photo), 1.0)
    assert np.abs(same - photo / 255.0).max() < 1e-6
    assert np.abs(colour.chroma(same) - colour.chroma(photo)).max() < 1e-4


def test_recombine_matches_a_hand_computation():
    rgb = np.array([[[200, 30, 40], [10, 120, 220], [128, 128, 128]],
                    [[0, 0, 0], [255, 255, 255], [90, 200, 60]]], dtype=np.uint8)
    ab = np.array([[[20.0, -10.0], [5.0, 5.0], [-15.0, 30.0]],
                   [[0.0, 0.0], [0.0, 0.0], [10.0, 10.0]]])
    L = color.rgb2lab(rgb / 255.0)[..., 0]
    expected = color.lab2rgb(np.concatenate([L[..., None], ab * 0.5], axis=-1))  # all in gamut
    assert np.abs(colour.recombine(rgb, ab, 0.5) - expected).max() < 1e-9
    # chroma given at a lower resolution is upsampled (a constant stays constant), never L
    mid = rgb[:1]  # mid-grey L values, where (8, 8) is in gamut
    out = colour.recombine(mid, np.full((1, 1, 2), 8.0), 1.0)
    assert np.allclose(colour.chroma(out), 8.0, atol=1e-4)
    assert colour.lab_lock_error(mid, out) < LOCK_TOLERANCE


def test_out_of_gamut_chroma_is_shrunk_towards_grey_keeping_hue():
    rgb = np.full((1, 1, 3), 200, dtype=np.uint8)
    out = colour.recombine(rgb, np.array([[[100.0, 100.0]]]), 1.0)
    ab = colour.chroma(out)[0, 0]
    assert 0 < ab[0] < 100 and abs(ab[0] - ab[1]) < 1e-3  # hue (the ab direction) kept, chroma reduced
    assert colour.lab_lock_error(rgb, out) < LOCK_TOLERANCE


def test_bad_arguments_are_refused():
    photo = _odd_photo()
    with pytest.raises(ValueError, match="colorfulness"):
        colour.recombine(photo, colour.chroma(photo), -1.0)
    with pytest.raises(ValueError, match="colour space"):
        colour.recombine(photo, colour.chroma(photo), space="hsv")


# ---- metrics ----------------------------------------------------------------------------------
def test_colour_metrics_on_identical_grey_and_colour_images():
    photo = skdata.coffee()[::4, ::4]
    grey = colour.to_grey(photo)
    assert metrics.ciede2000(photo, photo) == 0.0
    assert metrics.ab_psnr(photo, photo) == float("inf")
    assert metrics.ciede2000(grey, photo) > 5
    assert metrics.colourfulness(grey) < 0.01 < 20 < metrics.colourfulness(photo)
    m = metrics.colour_metrics(photo, photo, grey)
    assert m["ciede2000"] == 0 and m["grey_ciede2000"] > 5 and m["colourfulness_gap"] == 0
    assert m["grey_colourfulness"] < 0.01


def test_colourfulness_follows_hasler_and_suesstrunk():
    img = np.zeros((2, 2, 3), dtype=np.uint8)
    img[0, 0] = (255, 0, 0)
    rg, yb = np.array([255.0, 0, 0, 0]), np.array([127.5, 0, 0, 0])
    expected = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    assert abs(metrics.colourfulness(img) - expected) < 1e-9


# ---- the pix2pix colouriser -------------------------------------------------------------------
def _toy_photos(folder: Path, size: int = 32) -> list[np.ndarray]:
    """Two colour photos whose L patterns differ: blue horizontal stripes, orange-red vertical ones."""
    folder.mkdir(parents=True, exist_ok=True)
    i = np.arange(size)
    stripes = (np.sin(i / 2.0) > 0).astype(float)
    a = np.zeros((size, size, 3))
    a[..., 0], a[..., 1], a[..., 2] = 0.1, 0.25 + 0.3 * stripes[:, None], 0.8
    b = np.zeros((size, size, 3))
    b[..., 0], b[..., 1], b[..., 2] = 0.9, 0.2 + 0.5 * stripes[None, :], 0.1
    photos = [(x * 255).round().astype(np.uint8) for x in (a, b)]
    for n, p in zip("ab", photos):
        Image.fromarray(p).save(folder / f"{n}.png")
    return photos


def _toy_preset(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "colorize.toml"
    path.write_text(f"""name = "toy-colorize"
kind = "dit"
description = "toy"
model = "./none"
size = 32
[pix2pix]
lr = 0.002
ngf = 8
ndf = 8
n_layers_d = 2
[data]
layout = "colorization"
flip = false
val_fraction = 0.0
[train]
model = "pix2pix"
steps = {steps}
batch_size = 2
mixed_precision = "no"
save_every = {steps}
sample_every = {steps}
log_every = {steps}
num_workers = 0
cache_latents = false
[defaults]
size = 32
""")
    return path


def test_the_colorization_layout_pairs_each_photo_with_its_grey_version(tmp_path):
    from dit_translate.paired.data import PairedDataset

    photos = _toy_photos(tmp_path / "photos")
    ds = PairedDataset(tmp_path / "photos", load_preset(str(_toy_preset(tmp_path, 1))).paired.data, 32,
                       augment=False)
    item = ds[0]
    assert len(ds) == 2 and item["source"].shape == (3, 32, 32) and item["lab"].shape == (3, 32, 32)
    rgb = photos[0] / 255.0
    lab = color.rgb2lab(rgb)
    assert torch.allclose(item["lab"][0].double(), torch.from_numpy(lab[..., 0] / 50 - 1), atol=1e-4)
    assert torch.allclose(item["lab"][1:].double(), torch.from_numpy(lab[..., 1:] / 110).permute(2, 0, 1), atol=1e-4)
    grey = (item["source"].permute(1, 2, 0).double().numpy() + 1) / 2
    assert np.abs(colour.chroma(grey)).max() < 1e-4 and colour.lab_lock_error(rgb, grey) < 1e-3


def test_pix2pix_colouriser_overfits_two_toy_photos(tmp_path):
    from dit_translate.paired.loading import load_paired
    from dit_translate.paired.train import train

    torch.manual_seed(0)
    photos = _toy_photos(tmp_path / "photos")
    preset = load_preset(str(_toy_preset(tmp_path, 150)))
    train(preset, tmp_path / "photos", tmp_path / "run", progress=False)
    models = load_paired(tmp_path / "run")
    assert models.kind == "pix2pix" and models.net.is_colorizer
    errors, baseline = [], []
    for p in photos:
        lab = colour.rgb_to_lab(p)
        ab = colorize_ab(models.net, lab[..., 0])
        errors.append(np.abs(ab - lab[..., 1:]).mean())
        baseline.append(np.abs(lab[..., 1:]).mean())  # the grey photo: ab = 0
    assert np.mean(errors) < 0.25 * np.mean(baseline), (errors, baseline)


def _random_colourizer(folder: Path, tmp_path: Path) -> Path:
    preset = load_preset(str(_toy_preset(tmp_path, 1)))
    torch.manual_seed(0)
    net = UNetGenerator(num_downs=3, ngf=8, in_channels=1, out_channels=2)
    return write_checkpoint(folder, kind="pix2pix", net=net, spec=preset.paired, image_size=32, step=0,
                            preset="toy-colorize", defaults={"size": 40})


def test_api_colorize_returns_the_input_size_and_its_luma(tmp_path):
    ckpt = _random_colourizer(tmp_path / "ckpt", tmp_path)
    photo = _odd_photo()
    result = api.colorize(Image.fromarray(photo), checkpoint=str(ckpt), store=ModelStore("cpu"))
    out = (result.image[0].permute(1, 2, 0).double().numpy() + 1) / 2
    assert out.shape == photo.shape
    assert result.nfe == 1 and result.extras["input_was_colour"] and result.extras["working_size"] == [40, 27]
    assert result.metrics["luma_error"] < LOCK_TOLERANCE
    assert colour.lab_lock_error(photo, out) < 1e-3  # float32 tensor round trip
    for key in ("ciede2000", "grey_ciede2000", "ab_psnr", "grey_ab_psnr", "colourfulness", "grey_colourfulness"):
        assert np.isfinite(result.metrics[key]), key
    grey = api.colorize(Image.fromarray(photo), checkpoint=str(ckpt), colorfulness=0.0, store=ModelStore("cpu"))
    assert grey.metrics["colourfulness"] < 0.01
    yuv = api.colorize(Image.fromarray(photo), checkpoint=str(ckpt), space="yuv", store=ModelStore("cpu"))
    assert yuv.metrics["luma_error"] < 1e-6


def test_api_colorize_refuses_the_methods_not_built_and_non_colourisers(tmp_path):
    photo = Image.fromarray(_odd_photo())
    for method in ("controlnet", "desaturation"):
        with pytest.raises(ValueError, match="not built yet"):
            api.colorize(photo, method=method)
    with pytest.raises(ValueError, match="colorfulness"):
        api.colorize(photo, colorfulness=9.0)


def test_cli_colorize_json_contract(tmp_path, capsys):
    ckpt = _random_colourizer(tmp_path / "ckpt", tmp_path)
    src = tmp_path / "in.png"
    Image.fromarray(_odd_photo()).save(src)
    out = tmp_path / "out.png"
    assert main(["colorize", "--image", str(src), "--checkpoint", str(ckpt), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["method"] == "pix2pix" and report["nfe"] == 1 and report["size"] == [451, 299]
    assert report["seconds"] > 0 and report["input_was_colour"] is True
    assert {"ciede2000", "grey_ciede2000", "colourfulness", "grey_colourfulness", "ab_psnr", "grey_ab_psnr",
            "luma_error"} <= set(report["metrics"])
    saved = np.asarray(Image.open(out).convert("RGB"))
    assert saved.shape == (299, 451, 3)
    assert colour.lab_lock_error(_odd_photo(), saved) < 0.5  # 8-bit quantisation of the saved PNG
    assert main(["colorize", "--image", str(src), "--method", "controlnet", "--out", str(out)]) == 2
    assert "not built yet" in capsys.readouterr().err


# ---- the shipped tiny colouriser on held-out photos ---------------------------------------------
def _heldout_photos() -> dict[str, np.ndarray]:
    from dit_translate.tiny.data import load_extra_photos, load_photos

    photos = dict(load_photos("test"))
    if (PHOTOS / "photos.json").is_file():
        photos.update({k: v for k, (v, _c) in load_extra_photos(PHOTOS, "test").items()})
    return {k: v for k, v in photos.items() if not colour.is_grey(v)}


_NOT_SHIPPED = pytest.mark.skipif(not (SHIPPED / "paired.json").is_file(), reason="the tiny colouriser is not shipped")


@pytest.fixture(scope="module")
def heldout_rows():
    store = ModelStore("cpu")
    return {name: api.colorize(Image.fromarray(p), store=store).metrics for name, p in _heldout_photos().items()}


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows.values()]))


@_NOT_SHIPPED
def test_the_shipped_colouriser_adds_colour_and_keeps_l_on_held_out_photos(heldout_rows):
    assert {"chelsea", "coffee"} <= set(heldout_rows)
    assert all(r["luma_error"] < LOCK_TOLERANCE for r in heldout_rows.values())
    # measured at step 3000 on 37 held-out photos: 24.7 (truth 44.3, grey 0)
    assert _mean(heldout_rows, "colourfulness") > 15.0


@_NOT_SHIPPED
@pytest.mark.xfail(strict=True, reason="bar not met yet: measured at step 3000 on 37 held-out photos, mean "
                   "CIEDE2000 10.56 vs the grey photo's 10.29 (closer on 18 of 37; chelsea 14.97 vs 15.87, "
                   "coffee 24.95 vs 21.36); see assets/tiny/colorize-pix2pix/README.md")
def test_the_shipped_colouriser_beats_the_grey_photo_in_ciede2000_on_held_out_photos(heldout_rows):
    assert _mean(heldout_rows, "ciede2000") < _mean(heldout_rows, "grey_ciede2000") - 0.2
