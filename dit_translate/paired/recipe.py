"""What the training loop needs from a model kind (DiT or pix2pix): the update of one step and its state.

A recipe owns its trained modules, optimizers, LR schedulers and (optionally) EMA. ``update`` runs one
optimizer step over a list of micro-batches (gradient accumulation), and ``state_dict`` /
``load_state_dict`` cover everything an exact resume needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from dit_translate.paired.config import TrainSpec
from dit_translate.paired.data import PairedDataset

Batch = dict[str, torch.Tensor]


class Recipe:
    """Base class: subclasses fill ``modules``/``optimizers``/``lr_schedulers`` (and ``ema``) and define ``update``."""

    def __init__(self, accelerator: Accelerator, train: TrainSpec) -> None:
        self.accelerator, self.train_spec = accelerator, train
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.lr_schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.ema: EMAModel | None = None

    def make_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        t = self.train_spec
        return get_scheduler(t.lr_schedule, optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.steps)

    def unwrap(self, name: str) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.modules[name])

    def accumulate(self, name: str, batches: list[Batch], loss_fn: Callable[[Batch], dict[str, torch.Tensor]]
                   ) -> dict[str, float]:
        """Backpropagate ``loss_fn(batch)["loss"] / len(batches)`` for every micro-batch (gradient sync on the
        last one only) and return the mean of every logged value."""
        logs: dict[str, float] = {}
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            with nullcontext() if sync else self.accelerator.no_sync(self.modules[name]):
                with self.accelerator.autocast():
                    out = loss_fn(batch)
                self.accelerator.backward(out["loss"] / len(batches))
            for k, v in out.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / len(batches)
        return logs

    def step(self, name: str) -> None:
        """Clip gradients, step optimizer and LR scheduler ``name``, zero the gradients."""
        params = [p for p in self.modules[name].parameters() if p.requires_grad]
        if self.train_spec.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(params, self.train_spec.max_grad_norm)
        self.optimizers[name].step()
        self.lr_schedulers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)

    def lr(self) -> float:
        """The current learning rate of the first optimizer (for the log)."""
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def prepare(self, dataset: PairedDataset, progress: bool = True) -> None:
        """Precompute what every step would otherwise recompute from ``dataset`` (nothing by default)."""

    def net(self) -> torch.nn.Module:
        """The (unwrapped) network a checkpoint folder stores."""
        raise NotImplementedError

    def update(self, batches: list[Batch], generator: torch.Generator) -> dict[str, float]:
        """One optimizer step over ``batches`` (micro-batches on the device); returns scalars to log."""
        raise NotImplementedError

    def sample(self, sources: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
        """Translations of ``sources`` (B, 3, H, W) in [-1, 1] for the sample grids."""
        raise NotImplementedError

    def checkpoint_kwargs(self) -> dict[str, Any]:
        """Extra arguments of ``checkpoint.write_checkpoint`` (scheduler, CLIP) for this kind."""
        return {}

    @contextmanager
    def exported(self) -> Iterator[torch.nn.Module]:
        """``net()`` with the EMA weights swapped in (when there is an EMA), restored on exit."""
        net = self.net()
        if self.ema is None:
            yield net
            return
        params = list(net.parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield net
        finally:
            self.ema.restore(params)

    def state_dict(self) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {
            "modules": {k: self.unwrap(k).state_dict() for k in self.modules},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "lr_schedulers": {k: s.state_dict() for k, s in self.lr_schedulers.items()},
            "ema": None if self.ema is None else self.ema.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, sd in state["modules"].items():
            self.unwrap(k).load_state_dict(sd)
        for k, sd in state["optimizers"].items():
            self.optimizers[k].load_state_dict(sd)
        for k, sd in state["lr_schedulers"].items():
            self.lr_schedulers[k].load_state_dict(sd)
        if self.ema is not None:
            ema = dict(state["ema"])
            ema["shadow_params"] = [p.to(self.accelerator.device) for p in ema["shadow_params"]]
            self.ema.load_state_dict(ema)
        if self.accelerator.scaler is not None and state["scaler"] is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
