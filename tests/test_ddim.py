"""DDIM step, sampling and inversion against diffusers' own schedulers."""

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

from dit_translate.diffusion.ddim import (
    Schedule,
    ddim_invert,
    ddim_sample,
    ddim_step,
    make_steps,
    output_to_eps,
    training_target,
)
from dit_translate.untrained import SD_SCHEDULER


def _eps_fn(x, t):
    """A smooth, timestep-dependent stand-in for a U-Net."""
    return torch.tanh(0.7 * x + 0.001 * t) * 0.9


@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_step_matches_diffusers(eta, spacing):
    sched = DDIMScheduler(**SD_SCHEDULER, timestep_spacing=spacing)
    steps = make_steps(sched, 20)
    schedule = Schedule.from_scheduler(sched)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ours, ref = x.clone(), x.clone()
    for t in steps.timesteps:
        ours = ddim_step(ours, _eps_fn(ours, t), t, steps.prev(t), schedule, eta, g1)
        ref = sched.step(_eps_fn(ref, t), t, ref, eta=eta, generator=g2).prev_sample
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_v_and_x0_outputs_step_like_diffusers(prediction_type):
    """A v or x0 network's output, turned into noise, steps exactly as ``DDIMScheduler(prediction_type=...)``."""
    sched = DDIMScheduler(**{**SD_SCHEDULER, "prediction_type": prediction_type})
    steps, schedule = make_steps(sched, 10), Schedule.from_scheduler(sched)
    ours = ref = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for t in steps.timesteps:
        eps = output_to_eps(_eps_fn(ours, t), ours, schedule.alpha(t), prediction_type)
        ours = ddim_step(ours, eps, t, steps.prev(t), schedule, 0.0, None)
        ref = sched.step(_eps_fn(ref, t), t, ref).prev_sample
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_targets_imply_the_noise(prediction_type):
    ddpm = DDPMScheduler.from_config(DDIMScheduler(**SD_SCHEDULER).config)
    g = torch.Generator().manual_seed(3)
    x0, noise, t = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g), torch.tensor([5, 500, 995])
    a = ddpm.alphas_cumprod[t].view(-1, 1, 1, 1)
    target = training_target(x0, noise, a, prediction_type)
    expected = {"epsilon": noise, "v_prediction": ddpm.get_velocity(x0, noise, t), "sample": x0}[prediction_type]
    torch.testing.assert_close(target, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(output_to_eps(target, ddpm.add_noise(x0, noise, t), a, prediction_type), noise,
                               rtol=0, atol=1e-4)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        training_target(torch.zeros(1), torch.zeros(1), torch.tensor(0.5), "flow")


def test_ddim_invert_matches_inverse_scheduler():
    inv = DDIMInverseScheduler(**{k: v for k, v in SD_SCHEDULER.items() if k != "set_alpha_to_one"}, set_alpha_to_zero=False)
    steps = make_steps(DDIMScheduler(**SD_SCHEDULER), 25)
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ours = ddim_invert(_eps_fn, x0, steps, Schedule.from_scheduler(DDIMScheduler(**SD_SCHEDULER)))
    inv.set_timesteps(25)
    ref = x0.clone()
    for t in inv.timesteps:
        ref = inv.step(_eps_fn(ref, int(t)), int(t), ref).prev_sample
        torch.testing.assert_close(ours[int(t)], ref, rtol=0, atol=1e-5)
    assert sorted(ours) == sorted(int(t) for t in inv.timesteps)


def test_inversion_then_sampling_reconstructs():
    """Invert, then sample with the same (unguided) model: the source returns, better with more steps.

    The model is the exact epsilon of Gaussian data N(0, s^2 I), ``eps = sqrt(1-a) x / (a s^2 + 1 - a)``,
    for which the DDIM ODE is exact, so all error is discretisation error and must shrink.
    """
    sched = DDIMScheduler(**SD_SCHEDULER)
    schedule = Schedule.from_scheduler(sched)
    s2 = 0.8**2

    def eps(x, t):
        a = schedule.alpha(t)
        return (1 - a) ** 0.5 * x / (a * s2 + 1 - a)

    x0 = 0.8 * torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    errors = []
    for n in (5, 20, 100):
        steps = make_steps(sched, n)
        xT = ddim_invert(eps, x0, steps, schedule)[steps.timesteps[0]]
        errors.append(((ddim_sample(eps, xT, steps, schedule) - x0).norm() / x0.norm()).item())
    assert errors[0] > 2 * errors[1] > 4 * errors[2], errors
    assert errors[2] < 0.01, errors


def test_steps_tail_is_diffusers_strength_rule():
    steps = make_steps(DDIMScheduler(**SD_SCHEDULER), 20)
    assert len(steps.tail(0.5)) == 10 and steps.tail(0.5).timesteps[0] == 451
    assert len(steps.tail(0.33)) == int(20 * 0.33)
    with pytest.raises(ValueError, match="strength"):
        steps.tail(0.0)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        make_steps(DDIMScheduler(**SD_SCHEDULER), 0)
