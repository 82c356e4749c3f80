"""The tiny world's data, styles, captions, and the exactness of checkpoint/resume and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from dit_translate.tiny import data as D
from dit_translate.tiny.build import build_decoder, export, final_vae, load_tokenizer
from dit_translate.tiny.checkpoint import CHECKPOINT_NAME
from dit_translate.tiny.models import make_vae
from dit_translate.tiny.train_sd import SDTrainConfig, train_sd
from dit_translate.tiny.train_vae import VAETrainConfig, train_vae

SMALL_VAE = {"block_out_channels": [8, 16, 16], "norm_num_groups": 8, "sample_size": 32}
SMALL_UNET = {"block_out_channels": [8, 8, 16, 16], "norm_num_groups": 8, "cross_attention_dim": 16,
              "attention_head_dim": 2, "sample_size": 8}
SMALL_TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "projection_dim": 16}


@pytest.fixture(scope="module")
def train_set() -> D.TinyDataset:
    return D.TinyDataset("train", size=32, crops_per_photo=1, seed=0)


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return D.resize(D.load_photos("test")["chelsea"][:, 75:375], 64)


def test_held_out_photos_never_in_training_split(train_set):
    train = D.load_photos("train")
    held = D.load_photos("test")
    assert set(held) == set(D.HELD_OUT) and len(D.HELD_OUT) >= 2
    assert not set(train) & set(D.HELD_OUT)
    assert not set(train_set.photo_names) & set(D.HELD_OUT)
    for h in held.values():  # also no alias of a held-out photo (skimage's cat() is chelsea())
        assert all(t.shape != h.shape or not np.array_equal(t, h) for t in train.values())


def test_photos_are_uint8_rgb():
    for img in D.load_photos("all").values():
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_stylize_is_deterministic_and_shape_preserving(cat):
    for style in D.STYLES:
        out = D.stylize(cat, style)
        assert out.shape == cat.shape and out.dtype == np.uint8
        assert np.array_equal(out, D.stylize(cat, style))
    assert np.array_equal(D.stylize(cat, "photo"), cat)
    with pytest.raises(ValueError):
        D.stylize(cat, "cubism")


def _unique_colors(img: np.ndarray) -> int:
    return len(np.unique(img.reshape(-1, 3), axis=0))


def test_comic_has_flat_colors_and_dark_ink_on_edges(cat):
    comic = D.stylize(cat, "comic")
    assert _unique_colors(comic) < _unique_colors(cat) / 4
    grey = cat.astype(np.float32).mean(-1)
    edge = np.hypot(*np.gradient(grey))
    strong = edge > np.percentile(edge, 95)
    comic_luma = comic.astype(np.float32).mean(-1)
    assert (comic_luma[strong] < 40).mean() > 3 * (comic_luma[~strong] < 40).mean()
    assert (comic_luma < 40).mean() > 0.02


def test_pencil_is_grey_and_light(cat):
    pencil = D.stylize(cat, "pencil")
    assert np.array_equal(pencil[..., 0], pencil[..., 1]) and np.array_equal(pencil[..., 1], pencil[..., 2])
    assert pencil.mean() > cat.mean()


def test_watercolor_is_smoother_and_lighter(cat):
    wc = D.stylize(cat, "watercolor").astype(np.float32)
    photo = cat.astype(np.float32)
    fine = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert fine(wc) < fine(photo)
    assert wc.min() > photo.min()


def test_captions_are_well_formed(train_set):
    assert D.caption("comic", "a cat") == "a comic drawing of a cat"
    assert D.caption("pencil", "a rocket") == "a pencil sketch of a rocket"
    assert D.caption("photo", "an astronaut") == "a photo of an astronaut"
    for cap, style, name in zip(train_set.captions, train_set.styles, train_set.photo_names):
        assert cap == D.caption(style, D.PHOTOS[name])
        assert cap == cap.strip() and "  " not in cap and cap.islower()


def test_dataset_items_and_batches(train_set):
    x, cap, style = train_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert style in D.STYLES and isinstance(cap, str)
    assert len(train_set) == len(D.load_photos("train")) * len(D.STYLES)
    idx = torch.tensor([0, 1])
    plain, _ = train_set.batch(idx, torch.tensor([False, False]))
    flipped, caps = train_set.batch(idx, torch.tensor([True, False]))
    assert torch.equal(flipped[0], plain[0].flip(-1)) and torch.equal(flipped[1], plain[1])
    assert caps == [train_set.captions[0], train_set.captions[1]]


def test_recolor_changes_colours_not_captions(train_set):
    recolored = D.TinyDataset("train", size=32, crops_per_photo=1, seed=0, recolor=True)
    assert recolored.captions == train_set.captions
    assert not torch.equal(recolored.images, train_set.images)
    rgb = np.full((4, 4, 3), (200, 100, 50), np.uint8)
    out = D.random_recolor(rgb, np.random.default_rng(0))
    assert out.shape == rgb.shape and out.dtype == np.uint8


def test_synthetic_images_follow_the_photo_crops_in_every_style(train_set):
    mixed = D.TinyDataset("train", size=32, crops_per_photo=1, seed=0, synthetic=2)
    n = len(train_set)
    assert torch.equal(mixed.images[:n], train_set.images)  # the photo crops are unchanged
    assert len(mixed) == n + 2 * len(D.STYLES)
    assert mixed.captions[n:n + 2] == [D.caption("photo", D.SYNTHETIC_CONTENT), D.caption("comic", D.SYNTHETIC_CONTENT)]
    leaf = mixed.images[n].permute(1, 2, 0).numpy()
    comic = mixed.images[n + 1].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(comic, D.render(leaf, "comic"))  # pixel-aligned renderings of one image


def _same_checkpoints(a, b) -> bool:
    ta, tb = load_file(str(a / CHECKPOINT_NAME)), load_file(str(b / CHECKPOINT_NAME))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_vae_resume_is_exact(tmp_path, train_set):
    # constant LR after warmup: a decay schedule depends on the total step count by design
    cfg = lambda n: VAETrainConfig(steps=n, batch_size=4, save_every=2, log_every=1, size=32,  # noqa: E731
                                   model=SMALL_VAE, decay_from=1.0)
    train_vae(tmp_path / "a", cfg(4), train_set)
    train_vae(tmp_path / "b", cfg(2), train_set)
    train_vae(tmp_path / "b", cfg(4), train_set)
    assert _same_checkpoints(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b" / "loss.csv").read_text().count("\n") == 5  # header + 4 steps
    vae = (tmp_path / "b" / "final" / "config.json").read_text()
    assert '"scaling_factor"' in vae


def test_decoder_fine_tune_keeps_the_latents_and_improves_the_reconstruction(tmp_path, train_set):
    torch.manual_seed(0)
    base = make_vae(**SMALL_VAE).eval()
    base.save_pretrained(tmp_path / "vae" / "final")
    x = train_set.images[:8].float() / 127.5 - 1.0
    with torch.no_grad():
        z, before = base.encode(x).latent_dist.mean, F.mse_loss(base(x, sample_posterior=False).sample, x).item()
    cfg = VAETrainConfig(steps=30, batch_size=8, lr=2e-3, warmup=1, log_every=10, size=32, model=SMALL_VAE,
                         crops_per_photo=1, synthetic=4, decoder_only=True)
    build_decoder(tmp_path, cfg)
    tuned = AutoencoderKL.from_pretrained(final_vae(tmp_path)).eval()
    assert final_vae(tmp_path) == tmp_path / "vae-decoder" / "final"
    with torch.no_grad():
        assert torch.equal(tuned.encode(x).latent_dist.mean, z)  # bit-identical latents: stage 2 stays valid
        after = F.mse_loss(tuned(x, sample_posterior=False).sample, x).item()
    assert after < 0.9 * before, (before, after)  # measured 0.51 -> 0.40 (an untrained encoder's latents)
    assert tuned.config.scaling_factor == base.config.scaling_factor
    with pytest.raises(ValueError, match="init"):
        train_vae(tmp_path / "x", cfg, train_set)


def test_sd_resume_is_exact_and_export_loads(tmp_path, train_set, cat):
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    torch.manual_seed(0)
    vae = make_vae(**SMALL_VAE)
    vae.save_pretrained(tmp_path / "vae" / "final")
    tokenizer = load_tokenizer(tmp_path)
    cfg = lambda n: SDTrainConfig(steps=n, batch_size=4, save_every=2, log_every=1, size=32,  # noqa: E731
                                  unet=SMALL_UNET, text=SMALL_TEXT)
    train_sd(tmp_path / "x", cfg(4), vae, tokenizer, train_set)
    train_sd(tmp_path / "sd", cfg(2), vae, tokenizer, train_set)
    train_sd(tmp_path / "sd", cfg(4), vae, tokenizer, train_set)
    assert _same_checkpoints(tmp_path / "x", tmp_path / "sd")

    out = export(tmp_path, tmp_path / "out")
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    image = pipe("a comic drawing of a cat", image=Image.fromarray(cat).resize((32, 32)), strength=0.6,
                 num_inference_steps=5, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


def test_dead_leaves_cover_the_image_with_muted_occluding_shapes():
    from skimage import color, feature

    images = [D.dead_leaves(64, np.random.default_rng(seed)) for seed in range(6)]
    assert all(im.shape == (64, 64, 3) and im.dtype == np.uint8 for im in images)
    np.testing.assert_array_equal(images[0], D.dead_leaves(64, np.random.default_rng(0)))  # reproducible
    for im in images:
        assert (im.max(axis=-1) < 3).mean() < 0.02  # no uncovered (black) holes
        assert np.median(color.rgb2hsv(im)[..., 1]) < 0.5  # mostly muted colours, as in photos
        big = D.resize(im, 128).astype(np.float32) / 255  # where the comic filter draws ink (render's scale)
        ink = feature.canny(D._luma(big), sigma=2.0, low_threshold=0.05, high_threshold=0.12).mean()
        assert 0.05 < ink < 0.25, ink  # measured 0.12-0.16; training photo crops 0.01-0.21
    assert np.abs(images[0].astype(int) - images[1]).mean() > 20
