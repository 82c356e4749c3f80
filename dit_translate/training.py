"""What every training run shares: an exactly resumable training state and the loss log.

A training state is any nest of dicts/lists/tuples/scalars/tensors (model, EMA, optimizer and LR
scheduler state dicts, RNG): tensors become safetensors entries, the rest a JSON skeleton in the file's
metadata (dict keys keep their int/str type, so optimizer states load back). It is written atomically
(``dit_translate.files``), so a killed save leaves the previous state loadable. No pickle anywhere.
``LossLog`` is ``loss.csv``, which a resumed run trims back to its checkpoint's step, and
``run_steps`` is the loop every trainer runs (the tiny world's stages and paired training).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from dit_translate.errors import CheckpointError
from dit_translate.files import atomic_write, trim_csv_log
from dit_translate.runtime import step_generator

STATE_FORMAT = "dit-translate-state"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if torch.is_tensor(obj):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"t": key}
    if isinstance(obj, dict):
        return {"d": [[k, _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"l" if isinstance(obj, list) else "u": [_flatten(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state")


def _unflatten(node: dict, tensors: dict[str, torch.Tensor]) -> Any:
    (tag, value), = node.items()
    if tag == "t":
        return tensors[value]
    if tag == "d":
        return {k: _unflatten(v, tensors) for k, v in value}
    if tag == "l":
        return [_unflatten(v, tensors) for v in value]
    if tag == "u":
        return tuple(_unflatten(v, tensors) for v in value)
    return value


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write a nested training ``state`` to one safetensors file."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT,
                                                                       "state": json.dumps(skeleton)}))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read what ``save_state`` wrote (tensors on the CPU)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not a dit-translate training state")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _unflatten(json.loads(meta["state"]), tensors)


class LossLog:
    """``loss.csv``: one row per logged step; the rows after ``step`` (the resumed checkpoint's) are dropped.

    The first row written fixes the columns; later rows leave a missing value empty (NaN)."""

    def __init__(self, path: Path, step: int) -> None:
        self.path = Path(path)
        self.header = trim_csv_log(self.path, step)

    def write(self, values: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if self.header is None:
                self.header = list(values)
                writer.writerow(self.header)
            writer.writerow([f"{values.get(k, float('nan')):.6g}" for k in self.header])


Update = Callable[[int, torch.Generator], dict[str, float]]
"""``update(step, generator) -> scalars to log``: one optimizer step, all its random draws from ``generator``."""


def run_steps(
    update: Update,
    *,
    start: int,
    stop: int,
    seed: int,
    seconds: float = 0.0,
    rank: int = 0,
    samples_per_step: int,
    log_every: int,
    save_every: int,
    save: Callable[[int, float], None],
    log: LossLog | None = None,
    log_extra: Callable[[], dict[str, float]] | None = None,
    after_step: Callable[[int], None] | None = None,
    desc: str = "train",
    show: bool = True,
) -> float:
    """The one training loop: optimizer steps ``start .. stop - 1`` with a progress bar, the loss log every
    ``log_every`` steps (window means, samples per second, ``log_extra()``), ``after_step(step)`` and
    ``save(step, seconds)`` every ``save_every`` steps and at the end. Every random draw of step ``s`` comes
    from ``step_generator(seed, s, rank)``, so a run resumed from a save equals the uninterrupted one.
    Returns the training seconds, ``seconds`` included (the time of the steps before ``start``)."""
    bar = tqdm(total=stop, initial=start, desc=desc, disable=not show,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    window: dict[str, float] = {}
    window_steps, window_start = 0, time.perf_counter()
    step = start
    while step < stop:
        generator = step_generator(seed, step, rank)
        started = time.perf_counter()
        logs = update(step, generator)
        step += 1
        seconds += time.perf_counter() - started
        for k, v in logs.items():
            window[k] = window.get(k, 0.0) + float(v)
        window_steps += 1
        bar.update(1)
        if step % log_every == 0 or step == stop:
            means = {k: v / window_steps for k, v in window.items()}
            rate = window_steps * samples_per_step / (time.perf_counter() - window_start)
            bar.set_postfix(loss=f"{means['loss']:.4f}", sps=f"{rate:.1f}")
            if log is not None:
                log.write({"step": step, "seconds": seconds, **(log_extra() if log_extra else {}),
                           "samples_per_s": rate, **means})
            window, window_steps, window_start = {}, 0, time.perf_counter()
        if after_step is not None:
            after_step(step)
        if step % save_every == 0 or step == stop:
            save(step, seconds)
    bar.close()
    return seconds
