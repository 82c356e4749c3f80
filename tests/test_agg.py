"""AGG: windows, the asymmetric update, where gradients flow, guidance effect, NFE, pixel models and the CLI."""

import json
from pathlib import Path

import pytest
import torch

from dit_translate.cli import main
from dit_translate.diffusion.ddim import (
    ddim_invert,
    ddim_sample,
    ddim_update,
    output_to_eps,
    predict_x0,
)
from dit_translate.encoders import DinoEncoder
from dit_translate.methods.agg import (
    AGGConfig,
    agg,
    agg_phases,
    ddim_baseline,
    guided_update,
    refine_bias,
)
from dit_translate.methods.losses import image_guidance, text_guidance
from dit_translate.presets import load_preset
from dit_translate.untrained import build_random_dino

EXAMPLES = Path(__file__).resolve().parent.parent / "assets" / "examples"
TEXT = "a comic drawing of an astronaut"


@pytest.fixture(scope="module")
def style(clip, photo):
    return text_guidance([clip], TEXT, photo)


def _final_loss(style, result):
    with torch.no_grad():
        return style(result.image.clamp(-1, 1), torch.Generator().manual_seed(0)).item()


def test_windows_follow_the_official_index_rule():
    official = agg_phases(100, skip=0.4, edit=0.2, boost=0.2)
    assert len(official) == 60 and [official.count(p) for p in ("edit", "middle", "last")] == [19, 20, 21]
    assert official[:19] == ("edit",) * 19 and official[-21:] == ("last",) * 21
    assert agg_phases(20) == ("edit",) * 3 + ("middle",) * 4 + ("last",) * 5
    with pytest.raises(ValueError, match="leaves no step to run"):
        agg_phases(10, skip=1.0)


def test_asymmetric_update_equals_its_equation():
    x_t, x0g, eps = torch.tensor([0.3, -1.2]), torch.tensor([0.5, 0.1]), torch.tensor([-0.7, 2.0])
    z = torch.tensor([0.25, -0.5])
    a, a_prev, sigma = torch.tensor(0.3), torch.tensor(0.6), torch.tensor(0.2)
    out = guided_update(x_t, x0g, eps, a, a_prev, sigma, z)
    expected = 0.6**0.5 * x0g + (1 - 0.6 - 0.2**2) ** 0.5 * eps + 0.2 * z
    torch.testing.assert_close(out, expected)


def test_symmetric_switch_changes_exactly_the_epsilon_term():
    g = torch.Generator().manual_seed(0)
    x_t, x0g, eps, z = (torch.randn(1, 4, 3, 3, generator=g) for _ in range(4))
    a, a_prev, sigma = torch.tensor(0.2), torch.tensor(0.5), torch.tensor(0.3)
    asym = guided_update(x_t, x0g, eps, a, a_prev, sigma, z)
    sym = guided_update(x_t, x0g, eps, a, a_prev, sigma, z, symmetric=True)
    eps_guided = (x_t - a**0.5 * x0g) / (1 - a) ** 0.5
    torch.testing.assert_close(sym - asym, (1 - a_prev - sigma**2) ** 0.5 * (eps_guided - eps))
    torch.testing.assert_close(sym, ddim_update(x0g, eps_guided, a_prev, sigma, z))
    torch.testing.assert_close(output_to_eps(predict_x0(x_t, eps, a), x_t, a, "sample"), eps, atol=1e-5, rtol=0)


def test_refinement_is_adamw_on_a_bias_and_lowers_the_loss():
    target = torch.tensor([1.0, -1.0, 0.5])
    x0 = torch.zeros(3)
    refined, losses = refine_bias(x0, x0, lambda x, _xt: (x - target).pow(2).sum(), lr=0.1, iters=5)
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert torch.all(torch.sign(refined) == torch.sign(target))  # each AdamW step moves about lr towards it


def test_refinement_never_backpropagates_through_the_unet_while_mcg_does(models, photo, style):
    calls = []
    hook = models.unet.conv_in.register_full_backward_hook(lambda *args: calls.append(1))
    try:
        runs = {}
        for key, kw in {"dds-only": dict(mcg=False), "mcg-only": dict(refine="none"), "agg": {},
                        "all-mcg": dict(refine="mcg", inner_steps=2)}.items():
            calls.clear()
            steps = []
            r = agg(models, photo, style, AGGConfig(steps=20, **kw), prompt=TEXT, guidance=3.0, trace=steps.append)
            edits = [step.losses for step in steps if step.losses is not None]
            runs[key] = (len(calls), r.extras["unet_backwards"], r.extras["edit_steps"], edits)
    finally:
        hook.remove()
    assert runs["dds-only"][:2] == (0, 0) and all("refine" in e for e in runs["dds-only"][3])  # refinement ran
    assert runs["mcg-only"][:3] == (3, 3, 3)  # one backward through the U-Net per edit step
    assert runs["agg"][:3] == (3, 3, 3)  # ... and the refinement adds none
    assert runs["all-mcg"][:3] == (9, 9, 3)  # DiffuseIT-style: 1 + K backward passes per edit step
    assert all(p.grad is None for p in models.unet.parameters())


@pytest.mark.parametrize("seed", [0, 1])
def test_agg_lowers_the_guidance_loss_below_unguided_ddim(models, photo, style, seed):
    # lambda_gt = 10, the official style-transfer setting: on this random tiny model the default 200
    # makes the structure term dominate and the two final losses differ only at noise level
    kw = dict(prompt=TEXT, guidance=3.0, seed=seed)
    ddim = ddim_baseline(models, photo, AGGConfig(steps=20), **kw)
    guided = agg(models, photo, style, AGGConfig(steps=20, reg_weight=10.0), **kw)
    assert ddim.method == "ddim" and guided.method == "agg"
    assert _final_loss(style, guided) < _final_loss(style, ddim) - 0.05


def test_regulariser_keeps_the_result_closer_to_the_inversion_x0(models, photo, style):
    def distance(config):
        steps = []
        agg(models, photo, style, config, prompt=TEXT, guidance=3.0, seed=1, trace=steps.append)
        return (steps[-1].x - steps[-1].x0_inv).abs().mean().item()  # the final latent vs. the last x0_inv

    assert distance(AGGConfig(steps=20)) < distance(AGGConfig(steps=20, regularizer=False)) - 0.01


def test_zero_loss_agg_is_unguided_ddim_and_that_is_inversion_then_ddim(models, photo):
    def zero(images, generator=None):
        return images.sum() * 0

    kw = dict(prompt=TEXT, guidance=3.0, seed=0)
    config = AGGConfig(steps=10, reg_weight=0.0, range_weight=0.0)
    guided = agg(models, photo, zero, config, **kw)
    ddim = ddim_baseline(models, photo, config, **kw)
    torch.testing.assert_close(guided.image, ddim.image, atol=1e-5, rtol=0)  # same noise, zero guidance
    plain = ddim_baseline(models, photo, AGGConfig(steps=10, eta_edit=0, eta=0, eta_boost=0), **kw)
    den = models.denoiser()
    with torch.no_grad():
        run = models.steps(10).tail(0.6)
        empty, cond = models.empty_condition(), models.condition(TEXT, "", 3.0)
        z_t = ddim_invert(lambda x, t: den.unguided(x, t, empty), models.encode(photo), run, den.schedule)
        z = ddim_sample(lambda x, t: den(x, t, cond, 3.0), z_t[run.timesteps[0]], run, den.schedule)
    torch.testing.assert_close(plain.image, models.decode(z), atol=1e-5, rtol=0)


def test_nfe_counts_inversion_cfg_and_all_mcg_refinement(models, photo, style):
    kw = dict(prompt=TEXT, guidance=3.0)
    run, edit = 12, 3
    assert ddim_baseline(models, photo, AGGConfig(steps=20), **kw).nfe == run + 2 * run
    assert agg(models, photo, style, AGGConfig(steps=20), **kw).nfe == run + 2 * run  # MCG reuses its forward pass
    all_mcg = AGGConfig(steps=20, refine="mcg", inner_steps=2)
    assert agg(models, photo, style, all_mcg, **kw).nfe == run + 2 * run + 2 * 2 * edit


def test_pixel_model_runs_image_guidance_with_noise_mixing(tmp_path, photo):
    import timm
    from diffusers import DDIMScheduler, UNet2DModel

    from dit_translate.diffusion.models import DiffusionModels

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    pixel = DiffusionModels.from_components(unet, DDIMScheduler(num_train_timesteps=1000))
    dino = DinoEncoder.from_model(timm.create_model(f"local-dir:{build_random_dino(tmp_path / 'dino')}", pretrained=True), "t")
    style = image_guidance(dino, torch.rand(1, 3, 32, 32) * 2 - 1)
    ddim = ddim_baseline(pixel, photo, AGGConfig(steps=20))
    guided = agg(pixel, photo, style, AGGConfig(steps=20))
    assert guided.image.shape == photo.shape and torch.isfinite(guided.image).all()
    assert guided.nfe == ddim.nfe == 12 + 12 and guided.extras["unet_backwards"] == 3
    assert _final_loss(style, guided) < _final_loss(style, ddim)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"refine": "adam"}, "refine must be one of"),
        ({"inner_steps": 0}, "inner_steps must be a whole number at least 1, got 0"),
        ({"inner_steps": 1.5}, "inner_steps must be a whole number at least 1, got 1.5"),
        ({"skip": 1.5}, "skip must be in"),
        ({"eta_edit": -0.1}, "eta_edit must be in"),
        ({"lr": 0.0}, "lr must be in"),
        ({"mix": True}, "noise-mixed scoring\\) needs a pixel model"),
    ],
)
def test_bad_knobs_raise_clear_errors(models, photo, style, kwargs, match):
    with pytest.raises(ValueError, match=match):
        agg(models, photo, style, AGGConfig(**kwargs))


# ---- the CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [["--text", "a comic drawing", "--source-text", "a photo"],
                                  ["--style-image", str(EXAMPLES / "coffee.jpg")]])
def test_guide_cli_runs_end_to_end_on_a_real_photo(tmp_path, random_sd_folder, models, capsys, mode):
    from PIL import Image

    out = tmp_path / "out.png"
    code = main(["guide", "--image", str(EXAMPLES / "chelsea.jpg"), *mode, "--model", str(random_sd_folder),
                 "--steps", "10", "--seed", "3", "--output-size", "working", "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = payload["metrics"]
    assert payload["method"] == "agg" and payload["baseline"]["method"] == "ddim" and payload["device"] == "cpu"
    assert {"guidance_loss_ddim", "guidance_loss_agg", "ssim_to_source", "ssim_to_source_ddim"} <= set(metrics)
    cfg = 2 if mode[0] == "--text" else 1  # text mode conditions the U-Net on the text with CFG
    assert payload["nfe"] == payload["baseline"]["nfe"] == 6 + cfg * 6
    w, h = payload["size"]
    # --model without --size: the model's own size (U-Net sample_size x VAE factor), not the tiny preset's
    assert Image.open(out).size == (w, h) and w == models.native_size != load_preset("tiny").size


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "AGG needs a target: give a target text or a style image"),
        (["--text", "a comic", "--style-image", str(EXAMPLES / "coffee.jpg")], "not both"),
        (["--style-image", "missing.png"], "cannot read image 'missing.png'"),
        (["--style-image", str(Path(__file__))], "cannot read image 'test_agg.py'"),
        (["--source-text", "a photo", "--style-image", str(EXAMPLES / "coffee.jpg")], "source text only applies"),
        (["--text", "a comic", "--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_guide_user_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "o.png"
    assert main(["guide", "--image", str(EXAMPLES / "chelsea.jpg"), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()
