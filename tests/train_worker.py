"""A training run for ``test_faults.py`` to SIGKILL: the tiny-world VAE stage or the paired-DiT CLI.

    python tests/train_worker.py tiny WORK --steps N [--stall-save K --marker FILE] [--threads T]
    python tests/train_worker.py paired CONFIG DATA OUT [--stall-save K --marker FILE] [--threads T]

``--stall-save K`` makes the K-th checkpoint write stop half way through its temporary file and
wait (after creating ``--marker``), so the test can kill the process during a save.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, as in pytest

import torch  # noqa: E402

SMALL_VAE = {"block_out_channels": [8, 16, 16], "norm_num_groups": 8, "sample_size": 32}
SAVE_EVERY = 4


def train_tiny(work: str | Path, steps: int) -> None:
    """The tiny world's VAE stage (``TrainLoop``: AdamW, LR warmup and decay, per-step generators) at 32 px."""
    from dit_translate.tiny.data import TinyDataset
    from dit_translate.tiny.train_vae import VAETrainConfig, train_vae

    cfg = VAETrainConfig(steps=steps, batch_size=4, warmup=2, save_every=SAVE_EVERY, log_every=1, size=32,
                         model=SMALL_VAE)
    train_vae(work, cfg, TinyDataset("train", size=32, crops_per_photo=1, seed=0))


def stall_save(module, k: int, marker: Path) -> None:
    """Make ``module.save_file``'s ``k``-th call write half of its file, create ``marker`` and sleep."""
    from safetensors.torch import save

    real, calls = module.save_file, [0]

    def save_file(tensors, filename, metadata=None):
        calls[0] += 1
        if calls[0] == k:
            data = save(tensors, metadata=metadata)
            with open(filename, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            marker.write_text(str(filename))
            time.sleep(600)
        return real(tensors, filename, metadata=metadata)

    module.save_file = save_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("tiny", "paired"))
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--stall-save", type=int)
    parser.add_argument("--marker", type=Path)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stall_save:
        from dit_translate import training  # both kinds write their state with training.save_file

        stall_save(training, args.stall_save, args.marker)
    if args.kind == "tiny":
        train_tiny(args.paths[0], args.steps)
        return
    from dit_translate.cli import main as cli

    config, data, out = args.paths
    sys.exit(cli(["train", "--config", config, "--data", data, "--out", out]))


if __name__ == "__main__":
    main()
