"""Multi-process training with accelerate (issue 17): two CPU processes over gloo, launched by torchrun.

``accelerate launch --cpu --num_processes 2`` starts ONE process on this accelerate (1.16: ``--cpu`` always takes
its simple launcher, which spreads over processes only through ``mpirun``); the standard CPU launch is
``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m dit_translate train ...``, which accelerate then runs as
``MULTI_CPU`` with gloo. On GPUs it is ``accelerate launch --multi_gpu --num_processes N``.
"""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_paired_support import tiny_clip, write_ab_pairs, write_preset  # noqa: F401 - fixtures

from dit_translate.paired.train import STATE_FILE, train
from dit_translate.presets import load_preset
from dit_translate.training import load_state

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {"steps": 3, "lambda_clip": 0.0, "ema_decay": 0.9, "save_every": 2, "sample_every": 100}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(config: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "-m", "dit_translate", "train", "--config", str(config), "--data",
           str(data), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600, check=False)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    recipe = load_state(out / STATE_FILE)["recipe"]
    return {**recipe["modules"]["dit"], **{f"ema.{i}": p for i, p in enumerate(recipe["ema"]["shadow_params"])}}


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("mp")
    data = write_ab_pairs(root / "data", 8)
    two = write_preset(root / "two.toml", tiny_clip, train={**TRAIN, "batch_size": 2})
    one = write_preset(root / "one.toml", tiny_clip, train={**TRAIN, "batch_size": 4})
    run = _torchrun(two, data, root / "two")
    assert run.returncode == 0, run.stderr[-2000:]
    return root, data, two, one, run


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(setting):
    """Each sample's randomness follows its global position, DDP averages the two halves' gradients: the same
    optimisation up to float summation order."""
    root, data, _, one, run = setting
    assert run.stdout.count("trained two to step 3 on 2 processes") == 1  # the main process reports, once
    train(load_preset(str(one)), data, root / "one", progress=False)
    a, b = _weights(root / "two"), _weights(root / "one")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    two_log = (root / "two" / "loss.csv").read_text().splitlines()
    one_log = (root / "one" / "loss.csv").read_text().splitlines()
    assert len(two_log) == len(one_log) == 4  # header + 3 steps, written by the main process only
    for x, y in zip(two_log[1:], one_log[1:]):  # the logged loss is the mean over both processes' samples
        assert float(x.split(",")[4]) == pytest.approx(float(y.split(",")[4]), rel=1e-5)


def test_only_the_main_process_writes_and_a_two_process_run_resumes(setting):
    root, data, two, _, _ = setting
    assert sorted(p.name for p in (root / "two").iterdir() if p.suffix == ".safetensors") == [STATE_FILE]
    assert not [p for p in (root / "two").rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    first = _torchrun(two, data, root / "split", "--max-steps", "2")
    rest = _torchrun(two, data, root / "split")
    assert first.returncode == rest.returncode == 0 and "resumed at step 2" in rest.stdout
    a, b = _weights(root / "two"), _weights(root / "split")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
