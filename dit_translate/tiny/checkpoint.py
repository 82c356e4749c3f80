"""The tiny stages' checkpoint: one ``training`` state file per stage (model, optimizer, EMA, RNG, step).

Written atomically and read back exactly (``training.save_state``), so a stopped stage resumes as if it
had never stopped. No pickle is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers.training_utils import EMAModel

from dit_translate.training import load_state, save_state

CHECKPOINT_NAME = "checkpoint.safetensors"


def save_checkpoint(
    path: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMAModel | None = None,
    extra: dict | None = None,
) -> None:
    """Atomically write model/optimizer/EMA/RNG state after ``step`` optimizer steps to ``path``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_state(path, {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "ema": None if ema is None else ema.state_dict(), "rng": torch.get_rng_state(),
                      "extra": extra or {}})


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMAModel | None = None,
) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote into the given objects; returns ``{"step", "extra"}``."""
    state = load_state(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None and state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    torch.set_rng_state(state["rng"])
    return {"step": state["step"], "extra": state["extra"]}


def load_weights(path: str | Path, model: torch.nn.Module, ema: bool = True) -> int:
    """Load only the model weights of a checkpoint (its EMA shadows if ``ema``); returns its step.

    The shadows are stored in ``model.parameters()`` order (``EMAModel``), so ``model`` must be
    built from the same config as the trained one.
    """
    state = load_state(path)
    model.load_state_dict(state["model"])
    if ema:
        with torch.no_grad():
            for p, shadow in zip(model.parameters(), state["ema"]["shadow_params"], strict=True):
                p.copy_(shadow)
    return state["step"]
