"""AGG's variants pinned to the equations of the released code (image_editor_forgit.py, gaussian_diffusion_forgit.py,
extractor.py) and to the paper's text; the default grid and the refusal of an empty edit window."""

import pytest
import torch
import torch.nn.functional as F

from dit_translate.methods.agg import AGGConfig, agg, min_steps_for_edit, refine_bias
from dit_translate.methods.agg_inversion import invert_with_x0_adm
from dit_translate.methods.agg_variants import variant_config
from dit_translate.methods.losses import (
    ClipGuidanceLoss,
    ProgressiveClip,
    image_guidance,
    imagenet_templates,
    text_embedding,
)


def _quadratic(target: torch.Tensor):
    return lambda x0, _x_t: ((x0 - target) ** 2).sum()


def test_released_refinement_returns_its_pre_step_value():
    """cond_fn_dds scores x0 + b, steps AdamW, and returns the scored x0 + b: K iterations apply K - 1 updates."""
    torch.manual_seed(0)
    x0, target = torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)
    x_t = torch.zeros_like(x0)
    one, _ = refine_bias(x0, x_t, _quadratic(target), iters=1, pre_step=True)
    assert torch.equal(one, x0 + 1e-8)  # the bias's initial value: nothing changes at K = 1
    for k in (2, 4):
        released, _ = refine_bias(x0, x_t, _quadratic(target), iters=k, pre_step=True)
        applied, _ = refine_bias(x0, x_t, _quadratic(target), iters=k - 1)
        assert torch.equal(released, applied)
    # the paper's refinement at K = 1: one AdamW step, m_hat = g, v_hat = g^2 -> b = b0 (1 - lr wd) - lr g / (|g| + eps)
    paper, _ = refine_bias(x0, x_t, _quadratic(target), iters=1, lr=0.02)
    g = 2 * (x0 + 1e-8 - target)
    expected = x0 + 1e-8 * (1 - 0.02 * 0.01) - 0.02 * g / (g.abs() + 1e-8)
    torch.testing.assert_close(paper, expected, atol=1e-7, rtol=0)


class _FixedSimilarity(ClipGuidanceLoss):
    """A CLIP loss whose cosine is whatever ``value`` holds (the rule, not the model, is under test)."""

    def __init__(self, value: float):
        super().__init__((), (), weight=200.0)
        self.value = value

    def similarity(self, images, generator=None, crops=None):
        return images.sum() * 0 + self.value


def test_progressive_clip_weight_follows_prog_contrast_and_regularize_content():
    """MCG weight = lambda / frac_cont with frac_cont 0.5 while the last CLIP loss > -0.5, 2 while < -0.5 (1 at
    -0.5); the refinement keeps lambda; every evaluation updates the last loss."""
    x = torch.zeros(1, 3, 4, 4)
    loss = _FixedSimilarity(0.3)
    prog = ProgressiveClip(loss, last=-0.2)
    assert prog.mcg(x).item() == pytest.approx(-400 * 0.3) and prog.last == pytest.approx(-0.3)
    assert prog.refine(x).item() == pytest.approx(-200 * 0.3)
    loss.value = 0.7
    prog.refine(x)  # last = -0.7 < -0.5
    assert prog.mcg(x).item() == pytest.approx(-100 * 0.7)
    prog.last = -0.5
    assert prog.mcg(x).item() == pytest.approx(-200 * 0.7)


def test_adm_inversion_matches_ddim_reverse_sample(models, photo):
    """ADM's loop from index 0: pred_xstart = sqrt(1/a_i) x_i - sqrt(1/a_i - 1) eps(x_i, i); eps recomputed from it;
    x_{i+1} = pred_xstart sqrt(a_{i+1}) + sqrt(1 - a_{i+1}) eps; ddim_intermediate[i] = pred_xstart; one more
    evaluation at the top index."""
    den = models.denoiser()
    cond = models.empty_condition()
    run = models.steps(10)
    with torch.no_grad():
        z0 = models.encode(photo)
        top, x0s = invert_with_x0_adm(den, z0, run, cond)
        x, intermediate = z0, {}
        ascending = run.timesteps[::-1]
        for i, t in enumerate(ascending):
            a = den.schedule.alpha(t)
            pred = (1 / a) ** 0.5 * x - (1 / a - 1) ** 0.5 * den.unguided(x, t, cond)
            intermediate[t] = pred
            if i + 1 < len(ascending):
                eps = ((1 / a) ** 0.5 * x - pred) / (1 / a - 1) ** 0.5
                a_next = den.schedule.alpha(ascending[i + 1])
                x = pred * a_next**0.5 + (1 - a_next) ** 0.5 * eps
    torch.testing.assert_close(top, x, atol=1e-4, rtol=1e-4)
    assert list(x0s) == list(ascending)
    for t in ascending:
        torch.testing.assert_close(x0s[t], intermediate[t], atol=1e-4, rtol=1e-4)  # float32, two formulations
    assert den.nfe == 2 * len(ascending)  # ours + the oracle's: one evaluation per level each


def test_dino_cls_before_the_final_norm(dino, photo):
    """extractor.py takes [CLS] of the last block's output; the final LayerNorm of that token is the post-norm one."""
    pre = dino.cls_token(photo, pre_norm=True)
    post = dino.cls_token(photo)
    torch.testing.assert_close(dino.model.norm(pre), post, atol=1e-5, rtol=1e-5)
    assert (pre - post).abs().max() > 1e-2
    loss = image_guidance(dino, photo, pre_norm=True)
    assert loss.pre_norm and torch.equal(loss.target_cls, pre)


def test_released_text_embedding_averages_raw_features_of_the_80_imagenet_templates(clip):
    templates = imagenet_templates()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."
    tokens = clip.tokenizer([t.format("cat") for t in templates])
    with torch.no_grad():
        raw = clip.model.encode_text(tokens).float()
    torch.testing.assert_close(text_embedding(clip, "cat", templates, raw_mean=True),
                               F.normalize(raw.mean(0), dim=-1), atol=1e-6, rtol=0)
    per_unit = F.normalize(F.normalize(raw, dim=-1).mean(0), dim=-1)
    torch.testing.assert_close(text_embedding(clip, "cat", templates), per_unit, atol=1e-6, rtol=0)


def test_variant_configs_and_the_official_grid():
    released, paper = variant_config("released"), variant_config("paper")
    assert (released.steps, released.refine_output, released.adaptive_clip, released.inversion) == (
        100, "pre-step", True, "adm")
    assert (paper.steps, paper.refine_output, paper.adaptive_clip, paper.inversion) == (100, "updated", False, "diffusers")
    assert variant_config("paper", steps=None, inner_steps=3).steps == 100
    assert variant_config("paper", steps=30).steps == 30
    with pytest.raises(ValueError, match="unknown AGG variant 'magic'"):
        variant_config("magic")


def test_an_empty_edit_window_is_refused(models, photo, dino):
    """5-7 steps leave AGG's edit window empty (the result would be the unguided baseline under AGG's name)."""
    assert min_steps_for_edit() == 8
    style = image_guidance(dino, photo)
    for steps in (5, 7):
        with pytest.raises(ValueError, match="edit window .* empty.*at least 8 steps"):
            agg(models, photo, style, AGGConfig(steps=steps))
    assert agg(models, photo, style, AGGConfig(steps=8)).extras["edit_steps"] == 1


def test_released_refinement_is_inert_at_one_step_and_the_papers_is_not(models, photo, dino):
    """With a deterministic style loss (DINO + pixels), the released K = 1 refinement only adds the bias's 1e-8 to
    MCG-only AGG; the paper's AdamW step moves the output."""
    style = image_guidance(dino, photo.flip(-1))
    base = {"steps": 20, "inversion": "adm"}
    mcg_only = agg(models, photo, style, AGGConfig(refine="none", **base))
    released = agg(models, photo, style, AGGConfig(refine_output="pre-step", **base))
    paper = agg(models, photo, style, AGGConfig(**base))
    torch.testing.assert_close(released.image, mcg_only.image, atol=1e-5, rtol=0)
    assert (paper.image - mcg_only.image).abs().mean() > 1e-3
