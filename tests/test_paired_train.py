"""Training: a tiny DiT overfits toy pairs, checkpoints round-trip exactly, resume is bit-identical."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from test_paired_support import ab_data, lpips_backbone, tiny_clip, write_ab_pairs, write_preset  # noqa: F401 - fixtures

from dit_translate.metrics import psnr
from dit_translate.paired.checkpoint import STATE_FILE
from dit_translate.paired.data import PairedDataset
from dit_translate.paired.loading import load_paired
from dit_translate.paired.sampling import sample_dit, translate
from dit_translate.paired.train import train
from dit_translate.presets import load_preset
from dit_translate.training import load_state, save_state


def _losses(folder) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader((folder / "loss.csv").open())]


def _overfit(tmp_path, tiny_clip, steps: int, hidden: int, schedule: str = "constant", prediction: str = "epsilon"
             ) -> tuple[list[float], float, float, float]:
    """Train on 4 toy pairs; returns (logged losses, sample PSNR, source PSNR, PSNR to other targets)."""
    data = write_ab_pairs(tmp_path / "data", 4)
    preset = load_preset(str(write_preset(
        tmp_path / "p.toml", tiny_clip, dit={"hidden_size": hidden}, diffusion={"prediction_type": prediction},
        data={"val_fraction": 0.0, "flip": False},
        train={"steps": steps, "batch_size": 8, "lr": 3e-3, "lr_schedule": schedule, "ema_decay": 0.0, "log_every": 10,
               "save_every": steps, "sample_every": steps, "lambda_clip": 0.0})))
    train(preset, data, tmp_path / "out", progress=False)
    models = load_paired(tmp_path / "out")
    ds = PairedDataset(data, preset.paired.data, 32, "all", augment=False)
    src, tgt = (torch.stack([ds[i][k] for i in range(4)]) for k in ("source", "target"))
    out = sample_dit(models.net, models.codec, models.clip, models.scheduler, src, steps=50, guidance=1.0,
                     eta=1.0, generator=torch.Generator().manual_seed(0))
    own = np.mean([psnr(out[i], tgt[i]) for i in range(4)])
    others = np.mean([psnr(out[i], tgt[j]) for i in range(4) for j in range(4) if i != j])
    return _losses(tmp_path / "out"), own, np.mean([psnr(src[i], tgt[i]) for i in range(4)]), others


def test_tiny_dit_overfits_four_pairs(tmp_path, tiny_clip):
    losses, own, source, _ = _overfit(tmp_path, tiny_clip, steps=300, hidden=64)
    assert losses[0] / losses[-1] > 8  # measured: 0.84 -> 0.064 (x13)
    assert own > source + 3  # measured: 9.7 dB vs 3.6 dB for the untranslated sources


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_tiny_dit_overfits_four_pairs_predicting_v_or_x0(tmp_path, tiny_clip, prediction):
    """Trained on v or x0 targets and sampled through the checkpoint's saved scheduler (its prediction_type)."""
    losses, own, source, _ = _overfit(tmp_path, tiny_clip, steps=300, hidden=64, prediction=prediction)
    assert load_paired(tmp_path / "out").scheduler.config.prediction_type == prediction
    assert losses[0] / losses[-1] > 2.5  # measured: v 0.57 -> 0.18 (x3.2), x0 0.40 -> 0.055 (x7.3)
    assert own > source + 8  # measured: v 14.4 dB, x0 18.2 dB (epsilon above: 9.7 dB) vs 3.6 dB for the sources


@pytest.mark.slow
def test_tiny_dit_overfits_four_pairs_longer(tmp_path, tiny_clip):
    losses, own, source, others = _overfit(tmp_path, tiny_clip, steps=1500, hidden=96, schedule="cosine")
    assert losses[0] / losses[-1] > 25  # measured: 0.75 -> 0.021 (x36)
    assert own > source + 6  # measured: 11.1 dB vs 3.6 dB
    assert own > others + 3  # samples follow their own source: 11.1 dB vs 6.4 dB to the other targets


def test_training_state_round_trips_exactly(tmp_path):
    state = {"step": 3, "nested": {0: torch.arange(4.0), "betas": (0.9, 0.999), "none": None},
             "list": [torch.tensor(True), 1.5, "x"], "rng": torch.get_rng_state()}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["step"] == 3 and back["nested"]["betas"] == (0.9, 0.999) and back["nested"]["none"] is None
    assert 0 in back["nested"] and torch.equal(back["nested"][0], state["nested"][0])
    assert torch.equal(back["rng"], state["rng"]) and back["list"][1:] == [1.5, "x"]
    assert not list(tmp_path.glob("*.tmp"))


def _state_tensors(folder) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / STATE_FILE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_resume_is_bit_identical_and_checkpoint_loads_exactly(tmp_path, tiny_clip, ab_data, lpips_backbone):
    preset = load_preset(str(write_preset(
        tmp_path / "p.toml", tiny_clip, encoders={"lpips_backbone": str(lpips_backbone)},
        train={"steps": 6, "grad_accum": 2, "lambda_lpips": 0.2,
               "aux_t_max": 1000, "ema_decay": 0.9, "lr_schedule": "cosine", "warmup_steps": 2})))
    whole = train(preset, ab_data, tmp_path / "whole", progress=False)
    half = train(preset, ab_data, tmp_path / "split", max_steps=3, progress=False)
    rest = train(preset, ab_data, tmp_path / "split", progress=False)
    assert (whole.step, half.step, rest.step, rest.resumed_from) == (6, 3, 6, 3)
    a, b = _state_tensors(tmp_path / "whole"), _state_tensors(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # model, EMA, Adam moments, RNG
    assert load_state(tmp_path / "whole" / STATE_FILE)["recipe"]["lr_schedulers"] == \
        load_state(tmp_path / "split" / STATE_FILE)["recipe"]["lr_schedulers"]
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")  # the log was trimmed and continued
    assert (tmp_path / "whole" / "samples" / "step_0000006.png").is_file()
    assert not [p for p in (tmp_path / "whole").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".tmp")]
    # the exported folder holds the EMA weights and samples the same after a reload
    models = load_paired(tmp_path / "whole")
    assert models.step == 6 and json.loads((tmp_path / "whole" / "paired.json").read_text())["kind"] == "dit"
    source = torch.rand(1, 3, 32, 32) * 2 - 1
    first, again = translate(models, source, seed=3), translate(load_paired(tmp_path / "whole"), source, seed=3)
    assert torch.equal(first.image, again.image) and first.nfe == 2 * 4  # CFG 2.0: two branches per step


def test_resuming_with_another_configuration_is_refused(tmp_path, tiny_clip, ab_data):
    path = write_preset(tmp_path / "p.toml", tiny_clip, train={"steps": 1})
    train(load_preset(str(path)), ab_data, tmp_path / "out", progress=False)
    write_preset(path, tiny_clip, train={"steps": 2, "lr": 5e-4})
    with pytest.raises(ValueError, match=r"holds a run with another configuration \(spec.train.lr differ"):
        train(load_preset(str(path)), ab_data, tmp_path / "out", progress=False)
    write_preset(path, tiny_clip, train={"steps": 2})  # only the length changes: resumes
    assert train(load_preset(str(path)), ab_data, tmp_path / "out", progress=False).resumed_from == 1


def test_pix2pix_baseline_trains_in_the_same_harness(tmp_path, tiny_clip, ab_data):
    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, pix2pix={"ngf": 8, "ndf": 8},
                                          train={"steps": 2})))
    result = train(preset, ab_data, tmp_path / "gan", model_kind="pix2pix", progress=False)
    models = load_paired(tmp_path / "gan")
    assert result.step == 2 and models.kind == "pix2pix" and models.net.config.num_downs == 5
    header = (tmp_path / "gan" / "loss.csv").read_text().splitlines()[0]
    assert {"loss_d", "loss", "gan", "l1"} <= set(header.split(","))
    out = translate(models, torch.rand(1, 3, 32, 32) * 2 - 1)
    assert out.nfe == 1 and out.image.shape == (1, 3, 32, 32)


def test_missing_lpips_weights_fail_before_training(tmp_path, tiny_clip, ab_data, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, train={"lambda_lpips": 0.1})))
    with pytest.raises(FileNotFoundError, match=r"LPIPS \(alex\) needs its torchvision backbone weights at .*"
                                                r"alexnet-owt-7be5be79.pth, which is missing"):
        train(preset, ab_data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / STATE_FILE).exists()


def test_latent_space_concat_variant_trains_and_translates(tmp_path, tiny_clip, ab_data):
    """The non-paper variant in a (random) VAE's latent space: the local VAE is copied into the checkpoint."""
    from dit_translate.untrained import random_vae

    torch.manual_seed(0)
    random_vae(width=8, levels=3).save_pretrained(tmp_path / "vae")
    preset = load_preset(str(write_preset(tmp_path / "p.toml", tiny_clip, encoders={"vae": "./vae"},
                                          dit={"patch": 2, "source_concat": True}, train={"steps": 2})))
    train(preset, ab_data, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    models = load_paired(tmp_path / "out")
    assert models.codec.factor == 4 and models.net.config.source_channels == 4 and models.size_multiple == 8
    result = translate(models, torch.rand(1, 3, 32, 32) * 2 - 1, steps=3, guidance=1.0)
    assert result.image.shape == (1, 3, 32, 32) and result.nfe == 3 and result.image.abs().max() <= 1
