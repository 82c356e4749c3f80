"""SDEdit, the semantic-discrepancy correction and PnP: parity with diffusers, NFE, injection."""

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

from dit_translate.diffusion.ddim import Steps
from dit_translate.diffusion.features import FeatureSet
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.methods.correction import DEFAULT_FEATURES, correct
from dit_translate.methods.pnp import DEFAULT_FEATURES as PNP_FEATURES
from dit_translate.methods.pnp import pnp
from dit_translate.methods.sdedit import sdedit

PROMPT = "a comic drawing of an astronaut"


@pytest.fixture(scope="module")
def img2img(random_sd_folder):
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(random_sd_folder, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("strength,seed", [(0.5, 0), (0.8, 7)])
def test_sdedit_equals_diffusers_img2img(models, img2img, photo, strength, seed):
    ours = sdedit(models, photo, PROMPT, strength=strength, steps=10, guidance=7.5, seed=seed)
    ref = img2img(
        prompt=PROMPT, image=(photo + 1) / 2, strength=strength, num_inference_steps=10, guidance_scale=7.5,
        generator=torch.Generator().manual_seed(seed), output_type="pt",
    ).images
    torch.testing.assert_close((ours.image / 2 + 0.5).clamp(0, 1), ref, atol=1e-5, rtol=0)
    assert ours.nfe == 2 * int(10 * strength)
    assert ours.extras["steps_run"] == int(10 * strength)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_sdedit_of_a_v_or_x0_model_equals_diffusers_img2img(models, img2img, photo, prediction_type):
    """The same U-Net read as a v (SD 2.x 768-style) or x0 model, on both sides."""
    config = {**models.scheduler.config, "prediction_type": prediction_type}
    other = DiffusionModels.from_components(models.unet, DDIMScheduler.from_config(config), models.vae,
                                            models.text_encoder, models.tokenizer)
    ours = sdedit(other, photo, PROMPT, strength=0.6, steps=10, guidance=7.5, seed=2)
    original, img2img.scheduler = img2img.scheduler, DDIMScheduler.from_config(config)
    try:
        ref = img2img(prompt=PROMPT, image=(photo + 1) / 2, strength=0.6, num_inference_steps=10, guidance_scale=7.5,
                      generator=torch.Generator().manual_seed(2), output_type="pt").images
    finally:
        img2img.scheduler = original
    # the two sides round differently: x0 -> eps divides by sqrt(1 - a), diffusers does not
    torch.testing.assert_close((ours.image / 2 + 0.5).clamp(0, 1), ref, atol=5e-5, rtol=0)
    plain = sdedit(models, photo, PROMPT, strength=0.6, steps=10, guidance=7.5, seed=2)
    assert (plain.image - ours.image).abs().mean() > 1e-3  # the prediction type matters


def test_sdedit_seed_changes_output(models, photo):
    a = sdedit(models, photo, PROMPT, strength=0.6, steps=5, seed=0)
    b = sdedit(models, photo, PROMPT, strength=0.6, steps=5, seed=1)
    assert (a.image - b.image).abs().max() > 1e-3


def test_correction_with_no_layers_is_sdedit_bit_for_bit(models, photo):
    """Each variant's strength rule is the one SDEdit runs under when nothing is injected."""
    for variant, rule in (("released", Steps.ldm_tail), ("full", Steps.ldm_tail), ("trajectory", Steps.tail)):
        base = sdedit(models, photo, PROMPT, strength=0.7, steps=20, seed=3, strength_rule=rule)
        same = correct(models, photo, PROMPT, variant=variant, features=FeatureSet(), strength=0.7, steps=20, seed=3)
        assert torch.equal(same.image, base.image)
        assert same.nfe == base.nfe


def test_ldm_strength_rule():
    """The released sampler noises the source at loop index int(total_steps * (1 - strength)) (ddim_v_hacked.py,
    main.py's first_strength = 1 - x0_strength), in floating point."""
    grid = Steps(tuple(range(951, 0, -50)), 50)
    for strength in (0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 1.0):
        start = int(20 * (1 - strength))
        assert grid.ldm_tail(strength).timesteps == grid.timesteps[start:]
    assert len(grid.ldm_tail(0.8)) == 17 and len(grid.tail(0.8)) == 16


def test_released_correction_replaces_attention_maps_only(models, photo):
    """``released`` (main.py) injects the attention maps and nothing else; ``full`` adds the ResBlock feature."""
    base = sdedit(models, photo, PROMPT, strength=0.5, steps=10, seed=0, strength_rule=Steps.ldm_tail)
    released = correct(models, photo, PROMPT, variant="released", strength=0.5, steps=10, seed=0)
    assert released.nfe == base.nfe + 1
    assert released.extras["injections"] == 5 * len(DEFAULT_FEATURES.attn_probs)  # 5 steps, one CFG call each
    assert (released.image - base.image).abs().mean() > 1e-3
    resnet_only = correct(models, photo, PROMPT, variant="released", features=DEFAULT_FEATURES.only("resnet"),
                          strength=0.5, steps=10, seed=0)
    assert torch.equal(resnet_only.image, base.image)
    full = correct(models, photo, PROMPT, variant="full", strength=0.5, steps=10, seed=0)
    assert full.extras["injections"] == 5 * (len(DEFAULT_FEATURES.attn_probs) + len(DEFAULT_FEATURES.resnet))
    assert (full.image - released.image).abs().mean() > 1e-4


def test_trajectory_correction_windows(models, photo):
    base = sdedit(models, photo, PROMPT, strength=1.0, steps=10, seed=0)
    fixed = correct(
        models, photo, PROMPT, variant="trajectory", strength=1.0, steps=10, seed=0, tau_attn=0.5, tau_feat=0.8
    )
    assert fixed.nfe == base.nfe + 10  # one inversion evaluation per SDEdit step
    n_attn, n_res = len(DEFAULT_FEATURES.attn_probs), len(DEFAULT_FEATURES.resnet)
    assert fixed.extras["injections"] == 5 * n_attn + 8 * n_res


def test_pnp_nfe_and_injection_windows(models, photo):
    out = pnp(models, photo, PROMPT, steps=10, inversion_steps=20, guidance=7.5)
    # inversion: the 20-step grid (951, 901, ..., 1) up to where sampling starts (901): 19 evaluations;
    # sampling: 2 per step + 1 source pass while a window is open (8 of 10 steps)
    assert out.extras["inversion_steps"] == 19
    assert out.nfe == 19 + 10 * 2 + 8
    n_qk, n_res = len(PNP_FEATURES.attn_qk), len(PNP_FEATURES.resnet)
    assert out.extras["injections"] == 5 * n_qk + 8 * n_res
    again = pnp(models, photo, PROMPT, steps=10, inversion_steps=20, guidance=7.5)
    assert torch.equal(out.image, again.image)  # deterministic


@pytest.mark.parametrize("inversion_prompt", ["", "a photo of an astronaut"])
def test_pnp_without_injection_is_ddim_from_the_inverted_latent(models, photo, inversion_prompt):
    """tau=0 turns PnP into plain inversion (with the inversion prompt, if any) + guided DDIM sampling; check it
    against that composition."""
    from dit_translate.diffusion.ddim import ddim_invert, ddim_sample

    out = pnp(models, photo, PROMPT, steps=10, inversion_steps=10, guidance=3.0, negative_prompt="", tau_feat=0,
              tau_attn=0, inversion_prompt=inversion_prompt)
    den = models.denoiser()
    with torch.inference_mode():
        z0 = models.encode(photo)
        steps = models.steps(10)
        empty, cond = models.condition(inversion_prompt), models.condition(PROMPT, "", 3.0)
        zT = ddim_invert(lambda x, t: den.unguided(x, t, empty), z0, steps, den.schedule)[steps.timesteps[0]]
        z = ddim_sample(lambda x, t: den(x, t, cond, 3.0), zT, steps, den.schedule)
        ref = models.decode(z)
    torch.testing.assert_close(out.image, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"strength": 0.0}, "strength must be in"),
        ({"strength": 1.5}, "strength must be in"),
        ({"strength": float("nan")}, "strength must be in"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"strength": 0.05, "steps": 10}, "runs no denoising step"),
        ({"guidance": -1.0}, "guidance must be in"),
    ],
)
def test_bad_knobs_raise_clear_errors(models, photo, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sdedit(models, photo, PROMPT, **kwargs)


def test_unknown_variant(models, photo):
    with pytest.raises(ValueError, match="unknown correction variant 'magic'"):
        correct(models, photo, PROMPT, variant="magic")


def test_pnp_refuses_an_inversion_grid_without_the_sampling_timesteps(models, photo):
    """30 inversion steps (stride 33: 1, 34, ..., 958) miss 19 of 20 sampling timesteps (951, 901, ..., 1): each such
    step would get the source at another noise level. The message names the next grid that works: 39 (stride 25)."""
    from dit_translate.methods.pnp import compatible_inversion_steps

    run = models.steps(20).tail(1.0)
    n = compatible_inversion_steps(models, run, 30)
    assert n == 39 and set(run.timesteps) <= set(models.steps(n).timesteps)
    assert not any(set(run.timesteps) <= set(models.steps(k).timesteps) for k in range(30, 39))
    with pytest.raises(ValueError, match=r"inversion_steps 30 lacks 19 of the 20 sampling timesteps.*inversion_steps 39"):
        pnp(models, photo, PROMPT, steps=20, inversion_steps=30)
    out = pnp(models, photo, PROMPT, steps=20, inversion_steps=39, tau_feat=0, tau_attn=0)
    assert out.extras["inversion_grid"] == 39 and out.extras["inversion_steps"] == 39  # 1, 26, ..., 951


def test_api_pnp_uses_the_presets_grid_only_where_it_holds_the_sampling_timesteps():
    """tiny's 200-step inversion grid (stride 5) holds the 20-step grid (stride 50) but not the 30-step one (stride
    33): then the API inverts on the sampling grid itself and reports it; an explicit incompatible grid is refused."""
    from dit_translate import api

    image = "assets/examples/coffee.jpg"
    fast = dict(strength=0.3, guidance=3.0)
    r20 = api.edit(api.EditRequest("pnp", "a comic drawing", steps=20, **fast), image, preset="tiny")
    r30 = api.edit(api.EditRequest("pnp", "a comic drawing", steps=30, **fast), image, preset="tiny")
    assert r20.extras["inversion_grid"] == 200 and r30.extras["inversion_grid"] == 30
    with pytest.raises(ValueError, match="inversion_steps 200 lacks"):
        api.edit(api.EditRequest("pnp", "a comic drawing", steps=30, inversion_steps=200, **fast), image, preset="tiny")
