"""The training latent cache: the latents it serves equal encoding the served batch at every step."""

import pytest
import torch
from accelerate import Accelerator
from test_paired_support import tiny_clip, write_ab_pairs, write_preset  # noqa: F401 - fixtures

from dit_translate.diffusion.codec import LatentCodec
from dit_translate.paired.data import PairedDataset
from dit_translate.paired.latent_cache import LatentCache
from dit_translate.paired.train import DiTRecipe
from dit_translate.presets import load_preset


@pytest.fixture(scope="module")
def vae_folder(tmp_path_factory):
    from dit_translate.untrained import random_vae

    folder = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    random_vae(width=8, levels=3).save_pretrained(folder / "vae")
    return folder / "vae"


@pytest.fixture(scope="module")
def codec(vae_folder):
    from diffusers import AutoencoderKL

    return LatentCodec(AutoencoderKL.from_pretrained(vae_folder))


def _batch(dataset: PairedDataset, items: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    got = [dataset[it] for it in items]
    return {k: torch.stack([g[k] for g in got]) for k in got[0]}


def test_codec_sample_draws_what_diffusers_posterior_draws(codec):
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    dist = codec.vae.encode(images).latent_dist
    expected = dist.sample(torch.Generator().manual_seed(7)) * codec.scale
    assert torch.allclose(codec.encode(images, torch.Generator().manual_seed(7)), expected, atol=1e-6)
    assert torch.allclose(codec.encode(images), dist.mode() * codec.scale, atol=1e-6)


def test_cached_latents_equal_encoding_each_served_item(tmp_path, codec, tiny_clip):
    data = write_ab_pairs(tmp_path / "data", 5)
    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, data={"val_fraction": 0.0, "flip": True})))
    dataset = PairedDataset(data, preset.paired.data, 32, "train")
    cache = LatentCache.build(dataset, codec, torch.device("cpu"), batch_size=2, progress=False)
    batch = _batch(dataset, [(i % 5, seed) for i, seed in enumerate(range(40))])
    assert 0 < int(batch["flip"].sum()) < 40  # both mirror images are served
    mean, std, source = cache.moments(batch["index"], batch["flip"], torch.device("cpu"))
    target_mean, target_std = codec.moments(batch["target"])
    assert torch.allclose(mean, target_mean, atol=1e-5) and torch.allclose(std, target_std, atol=1e-5)
    assert torch.allclose(source, codec.encode(batch["source"]), atol=1e-5)
    assert cache.target_mean.shape == (5, 2, 4, 8, 8)


def test_unreadable_pair_is_never_looked_up(tmp_path, codec, tiny_clip):
    data = write_ab_pairs(tmp_path / "data", 3)
    (data / "p1.png").write_bytes(b"not a png")
    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, data={"val_fraction": 0.0})))
    dataset = PairedDataset(data, preset.paired.data, 32, "train")
    cache = LatentCache.build(dataset, codec, torch.device("cpu"), progress=False)
    assert cache.target_std[1].abs().sum() == 0 and cache.target_std[[0, 2]].abs().min() > 0
    item = dataset[(1, 0)]  # p1 is unreadable: the dataset serves p2 in its place and says so
    assert int(item["index"]) == 2
    _, _, source = cache.moments(item["index"][None], item["flip"][None], torch.device("cpu"))
    assert torch.allclose(source, codec.encode(item["source"][None]), atol=1e-5)


def test_recipe_loss_is_the_same_with_and_without_the_cache(tmp_path, vae_folder, tiny_clip):
    data = write_ab_pairs(tmp_path / "data", 4)
    (tmp_path / "vae").symlink_to(vae_folder)
    losses = {}
    for cached in (True, False):
        preset = load_preset(str(write_preset(
            tmp_path / "p.toml", tiny_clip, encoders={"vae": "./vae"}, dit={"patch": 2, "source_concat": True},
            data={"val_fraction": 0.0}, train={"cache_latents": cached, "aux_t_max": 1000})))
        torch.manual_seed(0)
        recipe = DiTRecipe(Accelerator(cpu=True), preset.paired, preset)
        dataset = PairedDataset(data, preset.paired.data, 32, "train")
        recipe.prepare(dataset, progress=False)
        assert (recipe.latents is not None) == cached
        batch = _batch(dataset, [(i, 10 + i) for i in range(4)])
        with torch.no_grad():
            losses[cached] = recipe.losses(batch)
    assert {"mse", "clip"} <= set(losses[True])
    for key in losses[False]:
        assert torch.allclose(losses[True][key], losses[False][key], atol=1e-5), key


def test_random_crops_are_not_cached(tmp_path, codec, vae_folder, tiny_clip):
    data = write_ab_pairs(tmp_path / "data", 2)
    (tmp_path / "vae").symlink_to(vae_folder)
    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, encoders={"vae": "./vae"},
                                          dit={"patch": 2}, data={"val_fraction": 0.0, "load_size": 40})))
    dataset = PairedDataset(data, preset.paired.data, 32, "train")
    assert not dataset.fixed_crop
    with pytest.raises(ValueError, match="random crops"):
        LatentCache.build(dataset, codec, torch.device("cpu"), progress=False)
    recipe = DiTRecipe(Accelerator(cpu=True), preset.paired, preset)
    recipe.prepare(dataset, progress=False)
    assert recipe.latents is None  # encoded at every step instead
