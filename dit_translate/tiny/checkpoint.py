"""Atomic, exactly-resumable training checkpoints: one safetensors file per stage.

Tensors (model weights, optimizer moments, EMA shadows, the torch RNG state) are safetensors
entries; everything else (step, optimizer hyper-parameters, EMA counters) is JSON stored in the
file's metadata. The file is written to a temporary name and moved into place with
``os.replace`` (``dit_translate.files.atomic_write``), so a crash never leaves a half-written
checkpoint. No pickle is involved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers.training_utils import EMAModel
from safetensors import safe_open
from safetensors.torch import save_file

from dit_translate.files import atomic_write

CHECKPOINT_NAME = "checkpoint.safetensors"


def _optimizer_entries(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    path: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMAModel | None = None,
    extra: dict | None = None,
) -> None:
    """Atomically write model/optimizer/EMA/RNG state after ``step`` optimizer steps to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_entries(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    meta: dict[str, Any] = {"step": step, "optimizer": opt_meta, "extra": extra or {}}
    if ema is not None:
        ema_state = ema.state_dict()
        for i, shadow in enumerate(ema_state.pop("shadow_params")):
            tensors[f"ema.{i}"] = shadow.detach().cpu().contiguous()
        meta["ema"] = ema_state
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)}))


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMAModel | None = None,
) -> dict:
    """Restore what ``save_checkpoint`` wrote into the given objects; returns the JSON metadata."""
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optimizer": {}, "ema": {}, "rng": {}}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
        for name in f.keys():
            prefix, rest = name.split(".", 1)
            groups[prefix][rest] = f.get_tensor(name)
    model.load_state_dict(groups["model"])
    _load_optimizer(optimizer, {f"optimizer.{k}": v for k, v in groups["optimizer"].items()}, meta["optimizer"])
    if ema is not None and "ema" in meta:
        shadows = [groups["ema"][str(i)] for i in range(len(groups["ema"]))]
        ema.load_state_dict({**meta["ema"], "shadow_params": shadows})
    torch.set_rng_state(groups["rng"]["torch"])
    return meta


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    """A CPU generator for one training step, so batches/noise depend only on (seed, step, rank)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + process)


def load_weights(path: str | Path, model: torch.nn.Module, ema: bool = True) -> int:
    """Load only the model weights of a checkpoint (its EMA shadows if ``ema``); returns its step.

    The shadows are stored in ``model.parameters()`` order (``EMAModel``), so ``model`` must be
    built from the same config as the trained one.
    """
    with safe_open(str(path), framework="pt") as f:
        step = json.loads(f.metadata()["state"])["step"]
        model.load_state_dict({k.removeprefix("model."): f.get_tensor(k) for k in f.keys() if k.startswith("model.")})
        if ema:
            with torch.no_grad():
                for i, p in enumerate(model.parameters()):
                    p.copy_(f.get_tensor(f"ema.{i}"))
    return step
