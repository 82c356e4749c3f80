"""The training loop both tiny stages share: accelerate, AdamW, LR warmup/decay, EMA, CSV log, resume.

Every random draw of a step comes from ``step_generator(seed, step, rank)``, so a run that is
stopped and resumed from its checkpoint reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from dit_translate.files import remove_stale_temps, trim_csv_log, write_text_atomic
from dit_translate.tiny.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, step_generator

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

    def _open_log(self) -> tuple:
        """Open ``loss.csv`` for appending, dropping rows logged after the resumed checkpoint."""
        path = self.work / "loss.csv"
        header = trim_csv_log(path, self.step)
        handle = path.open("a", newline="")
        return handle, csv.writer(handle), header is not None

    def run(self, step_fn: StepFn) -> None:
        """Run optimizer steps ``self.step .. self.steps - 1``, logging and checkpointing."""
        main = self.accelerator.is_main_process
        handle, writer, has_header = self._open_log() if main else (None, None, True)
        bar = tqdm(total=self.steps, initial=self.step, desc=self.desc, disable=not main,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
        sums: dict[str, float] = {}
        window_start, window_steps = time.perf_counter(), 0
        while self.step < self.steps:
            t0 = time.perf_counter()
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr_at(self.step)
            g = step_generator(self.seed, self.step, self.accelerator.process_index)
            self.model.train()
            out = step_fn(self.model, g)
            self.accelerator.backward(out["loss"])
            self.accelerator.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.params)
            self.step += 1
            self.seconds += time.perf_counter() - t0
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            window_steps += 1
            bar.update(1)
            if self.step % self.log_every == 0 or self.step == self.steps:
                means = {k: v / window_steps for k, v in sums.items()}
                rate = window_steps * self.batch_size / (time.perf_counter() - window_start)
                bar.set_postfix(loss=f"{means['loss']:.4f}", sps=f"{rate:.1f}")
                if main:
                    if not has_header:
                        writer.writerow(["step", "seconds", "samples_per_s", *means])
                        has_header = True
                    writer.writerow([self.step, f"{self.seconds:.1f}", f"{rate:.2f}",
                                     *(f"{v:.6g}" for v in means.values())])
                    handle.flush()
                sums, window_start, window_steps = {}, time.perf_counter(), 0
            if self.step % self.save_every == 0 or self.step == self.steps:
                self.save()
        bar.close()
        if handle is not None:
            handle.close()
