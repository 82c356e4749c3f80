"""A tiny stage's trainer: one module and optimizer with accelerate, LR warmup/decay, EMA, checkpoint, resume.

Every random draw of a step comes from ``step_generator(seed, step, rank)``, so a run that is
stopped and resumed from its checkpoint reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from dit_translate.files import remove_stale_temps, write_text_atomic
from dit_translate.tiny.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from dit_translate.training import LossLog, run_steps

StepFn = Callable[[torch.nn.Module, torch.Generator], dict[str, torch.Tensor]]


class TrainLoop:
    """Owns the accelerator, optimizer, optional EMA, checkpoint file and ``loss.csv`` of a stage.

    ``model`` is a module whose forward returns a dict of scalars with a ``"loss"`` entry;
    ``ema_parameters`` (optional) are the parameters to average (decay warms up to ``ema_decay``).
    The learning rate warms up linearly over ``warmup`` steps, then stays at ``lr`` until the
    fraction ``decay_from`` of ``steps`` and decays linearly to ``final_lr_frac * lr`` at the end.
    """

    def __init__(
        self,
        work: str | Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        steps: int,
        lr: float,
        warmup: int,
        seed: int,
        save_every: int,
        log_every: int,
        config: dict,
        desc: str,
        batch_size: int,
        ema_parameters: Iterable[torch.nn.Parameter] | None = None,
        ema_decay: float = 0.999,
        decay_from: float = 1.0,
        final_lr_frac: float = 0.1,
    ) -> None:
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.accelerator = Accelerator()
        self.steps, self.lr, self.warmup, self.seed = steps, lr, warmup, seed
        self.save_every, self.log_every, self.desc = save_every, log_every, desc
        self.batch_size = batch_size
        self.decay_from, self.final_lr_frac = decay_from, final_lr_frac
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.ema = None
        if ema_parameters is not None:
            self.ema = EMAModel(ema_parameters, decay=ema_decay, use_ema_warmup=True, power=0.75)
        self.step, self.seconds = 0, 0.0
        if self.accelerator.is_main_process:
            remove_stale_temps(self.work)  # what a killed save left
        if self.checkpoint_path.exists():
            meta = load_checkpoint(self.checkpoint_path, model, optimizer, self.ema)
            self.step, self.seconds = meta["step"], meta["extra"].get("seconds", 0.0)
        if self.accelerator.is_main_process:
            write_text_atomic(self.work / "train_config.json", json.dumps(config, indent=2))
        self.unwrapped, self.raw_optimizer = model, optimizer
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based)."""
        start = self.decay_from * self.steps
        decay = 1.0 if step < start else 1.0 - (1.0 - self.final_lr_frac) * (step - start) / max(1.0, self.steps - start)
        return self.lr * min(1.0, (step + 1) / max(1, self.warmup)) * decay

    @property
    def checkpoint_path(self) -> Path:
        return self.work / CHECKPOINT_NAME

    def save(self) -> None:
        """Write the checkpoint (main process only; others wait)."""
        if self.accelerator.is_main_process:
            save_checkpoint(self.checkpoint_path, self.step, self.unwrapped, self.raw_optimizer,
                            self.ema, extra={"seconds": self.seconds})
        self.accelerator.wait_for_everyone()

    def run(self, step_fn: StepFn) -> None:
        """Run optimizer steps ``self.step .. self.steps - 1``, logging and checkpointing (``training.run_steps``)."""

        def update(step: int, g: torch.Generator) -> dict[str, float]:
            self.step = step  # the step being taken, for step functions that schedule by it
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(step)
            self.model.train()
            out = step_fn(self.model, g)
            self.accelerator.backward(out["loss"])
            self.accelerator.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.params)
            return {k: float(v.detach()) for k, v in out.items()}

        def save(step: int, seconds: float) -> None:
            self.step, self.seconds = step, seconds
            self.save()

        main = self.accelerator.is_main_process
        self.seconds = run_steps(
            update, start=self.step, stop=self.steps, seed=self.seed, seconds=self.seconds,
            rank=self.accelerator.process_index, samples_per_step=self.batch_size, log_every=self.log_every,
            save_every=self.save_every, save=save, log=LossLog(self.work / "loss.csv", self.step) if main else None,
            desc=self.desc, show=main)
        self.step = self.steps
