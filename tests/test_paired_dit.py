"""The CLIP-conditioned DiT: shapes, both conditioning variants, CFG, sizes, save/load, auxiliary losses."""

import pytest
import torch
from accelerate import Accelerator
from test_paired_support import lpips_backbone, tiny_clip, write_preset  # noqa: F401 - fixtures

from dit_translate.diffusion.ddim import Schedule
from dit_translate.diffusion.denoiser import Denoiser, ImageCondition, dit_network
from dit_translate.paired.config import DiffusionSpec
from dit_translate.paired.dit import PairedDiT
from dit_translate.paired.sampling import make_noise_scheduler


def _perturbed(model: PairedDiT, seed: int = 0) -> PairedDiT:
    """Zero-initialised layers make a fresh DiT ignore its inputs; give every weight some noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _model(**kw) -> PairedDiT:
    torch.manual_seed(0)
    return _perturbed(PairedDiT(**{"in_channels": 4, "patch_size": 2, "hidden_size": 32, "depth": 2,
                                   "num_heads": 2, "cond_dim": 16, **kw}))


@pytest.mark.parametrize("patch", [1, 2, 4, 8])
def test_shapes_for_patches_and_other_resolutions(patch):
    model = _model(patch_size=patch)
    for h, w in [(16, 16), (32, 16), (8 * patch, 4 * patch)]:
        x = torch.randn(3, 4, h, w)
        assert model(x, torch.tensor([0, 500, 999]), torch.randn(3, 16)).shape == (3, 4, h, w)
    if patch > 1:
        with pytest.raises(ValueError, match="not divisible by the patch size"):
            model(torch.randn(1, 4, 17, 16), torch.tensor([1]), torch.randn(1, 16))


def test_fresh_model_predicts_zero_like_dit():
    model = PairedDiT(in_channels=3, patch_size=4, hidden_size=32, depth=2, num_heads=2, cond_dim=8)
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([10, 20]), torch.randn(2, 8))
    assert torch.equal(out, torch.zeros_like(out))  # adaLN-Zero blocks and a zero output layer


def test_clip_condition_enters_and_null_rows_use_the_learned_null_embedding():
    model = _model()
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([300, 300])
    c1, c2 = torch.randn(2, 16), torch.randn(2, 16)
    assert not torch.allclose(model(x, t, c1), model(x, t, c2))
    dropped = model(x, t, c1, keep=torch.tensor([False, True]))
    null = model(x, t, model.null_cond.detach().expand(2, 16).clone())
    assert torch.allclose(dropped[0], null[0], atol=1e-6) and torch.allclose(dropped[1], model(x, t, c1)[1], atol=1e-6)
    assert model.null_cond.requires_grad  # learned, zero at initialisation


def test_source_concat_variant_sees_the_source_structure():
    model = _model(source_channels=4)
    assert model.patch_embed.in_channels == 8
    x, t, c = torch.randn(1, 4, 16, 16), torch.tensor([400]), torch.randn(1, 16)
    a, b = model(x, t, c, source=torch.randn(1, 4, 16, 16)), model(x, t, c, source=torch.randn(1, 4, 16, 16))
    assert a.shape == (1, 4, 16, 16) and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pass `source` exactly when"):
        model(x, t, c)
    with pytest.raises(ValueError, match="pass `source` exactly when"):
        _model()(x, t, c, source=x)


def test_cfg_combines_both_branches_in_one_batch():
    model = _model()
    x, c = torch.randn(2, 4, 16, 16), torch.randn(2, 16)
    t = torch.full((2,), 700)
    denoiser = Denoiser(dit_network(model), Schedule.from_scheduler(make_noise_scheduler(DiffusionSpec())))
    with torch.no_grad():
        eps_c, eps_u = model(x, t, c), model(x, t, c, keep=torch.zeros(2, dtype=torch.bool))
        guided = denoiser(x, 700, ImageCondition(c), 3.0)
        assert denoiser.nfe == 4  # both branches of both samples, in one batch
        plain = denoiser(x, 700, ImageCondition(c), 1.0)
    assert torch.allclose(guided, eps_u + 3.0 * (eps_c - eps_u), atol=1e-5) and torch.allclose(plain, eps_c)


def test_dit_sizes_match_the_dit_paper():
    small = PairedDiT.of_size("S", 2, in_channels=4, cond_dim=768)
    assert (len(small.blocks), small.config.hidden_size, small.config.num_heads) == (12, 384, 6)
    assert 32e6 < sum(p.numel() for p in small.parameters()) < 34e6  # DiT-S/2 has 33 M parameters


def test_save_pretrained_round_trip_is_exact_and_pickle_free(tmp_path):
    model = _model(source_channels=4)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = PairedDiT.from_pretrained(tmp_path / "m").eval()
    x, s, c = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16), torch.randn(2, 16)
    t = torch.tensor([5, 900])
    assert torch.equal(model(x, t, c, s), loaded(x, t, c, s))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = _model().train()
    x, t, c = torch.randn(2, 4, 16, 16), torch.tensor([1, 2]), torch.randn(2, 16)
    params = [p for name, p in model.named_parameters() if name != "null_cond"]  # unused without dropped rows
    model(x, t, c).square().mean().backward()
    plain = [p.grad.clone() for p in params]
    model.zero_grad()
    model.enable_gradient_checkpointing()
    model(x, t, c).square().mean().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(plain, params))


def test_auxiliary_losses_reach_the_dit_through_the_frozen_vae(tmp_path, tiny_clip, lpips_backbone):
    """CLIP and LPIPS terms of x0_hat decoded by a (random) VAE backpropagate into the DiT only."""
    from dit_translate.paired.train import DiTRecipe
    from dit_translate.presets import load_preset
    from dit_translate.untrained import random_vae

    torch.manual_seed(0)
    random_vae(width=8, levels=2).save_pretrained(tmp_path / "vae")
    preset = load_preset(str(write_preset(
        tmp_path / "p.toml", tiny_clip, encoders={"vae": "./vae", "lpips_backbone": str(lpips_backbone)}, dit={"patch": 2},
        train={"lambda_clip": 1.0, "lambda_lpips": 1.0, "aux_t_max": 1000})))
    recipe = DiTRecipe(Accelerator(cpu=True), preset.paired, preset)
    _perturbed(recipe.net()).train()
    assert recipe.codec.factor == 2 and recipe.codec.channels == 4
    batch = {"source": torch.rand(2, 3, 32, 32) * 2 - 1, "target": torch.rand(2, 3, 32, 32) * 2 - 1,
             "seed": torch.arange(2)}
    out = recipe.losses(batch)
    assert {"loss", "mse", "clip", "lpips"} <= set(out) and out["clip"] > 0 and out["lpips"] > 0
    (out["clip"] + out["lpips"]).backward()  # the auxiliary terms alone
    grads = [p.grad for p in recipe.net().parameters()]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    frozen = [*recipe.codec.parameters(), *recipe.clip.model.parameters(), *recipe.lpips.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in frozen)


def test_condition_dropout_rate_in_training(tmp_path, tiny_clip):
    from dit_translate.paired.train import DiTRecipe
    from dit_translate.presets import load_preset

    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, dit={"cond_dropout": 0.5},
                                          train={"lambda_clip": 0.0})))
    recipe = DiTRecipe(Accelerator(cpu=True), preset.paired, preset)
    seen = []
    recipe.net().register_forward_pre_hook(lambda _m, args: seen.append(args[4]))
    batch = {**{k: torch.zeros(256, 3, 32, 32) for k in ("source", "target")}, "seed": torch.arange(256)}
    with torch.no_grad():
        recipe.losses(batch)
    kept = seen[0].float().mean().item()
    assert 0.4 < kept < 0.6
