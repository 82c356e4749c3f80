"""Training paired models with accelerate: the CLIP-conditioned DiT (docs/methods.md §6) or the pix2pix baseline.

    python -m dit_translate train --config presets/X.toml --data DIR --out DIR [--max-steps N]
    accelerate launch --multi_gpu --num_processes N -m dit_translate train ...   # several GPUs / nodes
    ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m dit_translate train ...  # several CPU processes (gloo)

DiT loss (weights, cut and CLIP reference are preset fields; the paper confirms only the three terms)::

    L = ||y - y_theta(z_t, t, c)||^2          y = eps, v or z0 ([diffusion] prediction_type)
        + lambda_clip  * (1 - cos(CLIP(D(z0_hat)), CLIP(reference)))   for t < aux_t_max
        + lambda_lpips * LPIPS(D(z0_hat), target)                        for t < aux_t_max

with ``z0_hat`` the one-step estimate the prediction implies, decoded by the frozen VAE with gradients, and the CLIP
condition ``c`` dropped to the null embedding with probability ``cond_dropout`` (for CFG).

The output folder is a checkpoint folder (``checkpoint.py``) plus ``train_state.safetensors`` (model,
EMA, optimizers, LR schedulers, grad scaler, RNG and step, written atomically every ``save_every``
steps), ``loss.csv``, ``samples/step_XXXXXXX.png`` (source | translation | target rows) and
``run.json``. Every random draw of step ``s`` comes from generators seeded by ``(seed, s, rank)`` and
the data order from ``(seed, sample position)``, so a resumed run equals an uninterrupted one bit for
bit on the CPU.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torchvision.utils import make_grid

from dit_translate.diffusion.ddim import (
    Schedule,
    output_to_eps,
    predict_x0,
    training_target,
)
from dit_translate.errors import DataError
from dit_translate.files import remove_stale_temps, write_text_atomic
from dit_translate.images import save_image, to_pil
from dit_translate.metrics import load_lpips
from dit_translate.paired.checkpoint import (
    STATE_FILE,
    checkpoint_defaults,
    write_checkpoint,
)
from dit_translate.paired.config import PairedSpec
from dit_translate.paired.data import PairedDataset, PairSampler
from dit_translate.paired.dit import PairedDiT
from dit_translate.paired.latent_cache import LatentCache
from dit_translate.paired.loading import load_dit_encoders
from dit_translate.paired.pix2pix import ColorizationRecipe, Pix2PixRecipe, UNetGenerator
from dit_translate.paired.recipe import Batch, Recipe
from dit_translate.paired.sampling import make_noise_scheduler, sample_dit
from dit_translate.presets import Preset
from dit_translate.training import LossLog, load_state, run_steps, save_state

log = logging.getLogger(__name__)

LOGISTICS = ("steps", "save_every", "sample_every", "log_every", "num_workers", "sample_steps", "cache_latents")
"""``[train]`` fields a resumed run may change; any other difference from the saved run is an error."""
GRID_ROWS = 4


class DiTRecipe(Recipe):
    """The CLIP-conditioned DiT: AdamW, optional EMA, noise MSE plus the auxiliary CLIP and LPIPS terms."""

    def __init__(self, accelerator: Accelerator, spec: PairedSpec, preset: Preset) -> None:
        super().__init__(accelerator, spec.train)
        self.spec, device = spec, accelerator.device
        self.encoders = load_dit_encoders(spec.encoders, preset, device)
        self.codec, self.clip = self.encoders.codec, self.encoders.clip
        self.latents: LatentCache | None = None
        self.lpips = None
        if spec.train.lambda_lpips > 0:
            self.lpips = load_lpips(spec.encoders.lpips_net, spec.encoders.lpips_backbone).to(device)
        multiple = self.codec.factor * spec.dit.patch
        if preset.size % multiple:
            raise ValueError(f"preset {preset.name!r}: size {preset.size} must be a multiple of {multiple} "
                             f"(VAE factor {self.codec.factor} x patch {spec.dit.patch})")
        net = PairedDiT.from_spec(spec.dit, self.codec.channels, self.encoders.cond_dim)
        optimizer = torch.optim.AdamW(net.parameters(), lr=spec.train.lr, weight_decay=spec.train.weight_decay)
        if spec.train.ema_decay > 0:
            self.ema = EMAModel(net.parameters(), decay=spec.train.ema_decay)
        net, optimizer = accelerator.prepare(net, optimizer)
        self.modules, self.optimizers = {"dit": net}, {"dit": optimizer}
        self.lr_schedulers = {"dit": self.make_lr_scheduler(optimizer)}
        if self.ema is not None:
            self.ema.to(device)
        self.noise_scheduler = make_noise_scheduler(spec.diffusion)
        self.alphas = Schedule.from_scheduler(self.noise_scheduler).alphas_cumprod.to(device)

    def net(self) -> PairedDiT:
        return self.unwrap("dit")

    def prepare(self, dataset: PairedDataset, progress: bool = True) -> None:
        """Encode the training pairs once (``[train] cache_latents``) when only mirroring augments them."""
        if not self.train_spec.cache_latents or self.codec.vae is None:
            return
        if not dataset.fixed_crop:
            log.info("latents are encoded at every step: random crops (load_size > size) cannot be cached")
            return
        self.latents = LatentCache.build(dataset, self.codec, self.accelerator.device, self.train_spec.batch_size,
                                         progress=progress and self.accelerator.is_main_process)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss of one micro-batch and its parts (see the module docstring).

        Every random draw of a sample (its latent's posterior sample, timestep, noise, condition dropout) comes
        from a generator seeded by that sample's own seed (``batch["seed"]``, from its global position in the
        stream), so N processes with micro-batch b draw exactly what one process with micro-batch N*b draws.
        """
        t_spec, device = self.train_spec, self.accelerator.device
        source, target = batch["source"], batch["target"]
        gens = [torch.Generator().manual_seed(int(s)) for s in batch["seed"]]
        with torch.no_grad():
            concat = self.spec.dit.source_concat
            if self.latents is not None:
                mean, std, source_latent = self.latents.moments(batch["index"], batch["flip"], device, source.dtype)
            else:
                (mean, std), source_latent = self.codec.moments(target), self.codec.encode(source) if concat else None
            z0 = mean + std * torch.stack([torch.randn(mean.shape[1:], generator=gi) for gi in gens]).to(mean)
            cond = self.clip.embed_image(source)
        T = self.spec.diffusion.num_train_timesteps
        t = torch.stack([torch.randint(0, T, (), generator=gi) for gi in gens]).to(device)
        noise = torch.stack([torch.randn(z0.shape[1:], generator=gi) for gi in gens]).to(device, z0.dtype)
        keep = (torch.stack([torch.rand((), generator=gi) for gi in gens]) >= self.spec.dit.cond_dropout).to(device)
        a = self.alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        prediction = self.spec.diffusion.prediction_type
        output = self.modules["dit"](z_t, t, cond, source_latent if concat else None, keep)
        mse = F.mse_loss(output.float(), training_target(z0, noise, a, prediction).float())
        out = {"loss": mse, "mse": mse}
        aux = t < t_spec.aux_t_max
        # the auxiliary terms are logged even when no sample of this micro-batch is below aux_t_max, so every
        # process logs the same keys (they are averaged across processes)
        out.update({k: torch.zeros((), device=device) for k, on in (("clip", t_spec.lambda_clip > 0),
                                                                    ("lpips", self.lpips is not None)) if on})
        if (t_spec.lambda_clip > 0 or self.lpips is not None) and bool(aux.any()):
            eps = output_to_eps(output[aux], z_t[aux], a[aux], prediction)
            image = self.codec.decode(predict_x0(z_t[aux], eps, a[aux])).float()
            if t_spec.lambda_clip > 0:
                with torch.no_grad():
                    reference = self.clip.embed_image(target[aux] if t_spec.clip_reference == "target" else source[aux])
                out["clip"] = (1 - (self.clip.embed_image(image) * reference).sum(-1)).mean()
                out["loss"] = out["loss"] + t_spec.lambda_clip * out["clip"]
            if self.lpips is not None:
                out["lpips"] = self.lpips(image, target[aux].float()).mean()
                out["loss"] = out["loss"] + t_spec.lambda_lpips * out["lpips"]
        return out

    def update(self, batches: list[Batch], generator: torch.Generator) -> dict[str, float]:
        self.modules["dit"].train()
        logs = self.accumulate("dit", batches, self.losses)
        self.step("dit")
        if self.ema is not None:
            self.ema.step(self.net().parameters())
        return logs

    def checkpoint_kwargs(self) -> dict[str, Any]:
        return {"scheduler": self.noise_scheduler, "clip_spec": self.encoders.clip_spec,
                "clip_untrained": self.encoders.clip_untrained}

    def sample(self, sources: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
        with self.exported() as net:
            net.eval()
            return sample_dit(net, self.codec, self.clip, self.noise_scheduler, sources, steps=steps, guidance=1.0,
                              generator=generator)


@dataclass
class TrainResult:
    """What a ``train`` call did: the folder, the step reached and the step it resumed from."""

    out: Path
    step: int
    resumed_from: int
    seconds: float
    processes: int = 1
    main_process: bool = True


def _run_record(preset: Preset, kind: str) -> dict[str, Any]:
    spec = preset.paired.to_dict()
    spec["train"] = {k: v for k, v in spec["train"].items() if k not in LOGISTICS}
    return {"kind": kind, "image_size": preset.size, "spec": spec}


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_same_run(out: Path, record: dict[str, Any]) -> None:
    """A resumed ``out`` must hold a run of the same configuration (up to ``LOGISTICS``)."""
    path = out / "run.json"
    if not path.exists():
        return
    a = _flat({k: v for k, v in json.loads(path.read_text()).items() if k in record})
    b = _flat(record)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    if not diff:
        return
    raise ValueError(f"{out} holds a run with another configuration ({', '.join(diff[:3])} differ: "
                     f"{a.get(diff[0])!r} vs {b.get(diff[0])!r}); resume with the same config or use a new --out")


def build_recipe(kind: str, accelerator: Accelerator, preset: Preset) -> Recipe:
    """The recipe of ``kind`` ("dit" or "pix2pix") for ``preset``; loads and checks its encoders. pix2pix on
    the ``colorization`` data layout is the L -> ab colouriser."""
    spec = preset.paired
    if kind == "pix2pix":
        depth = UNetGenerator.for_size(preset.size, 1).config.num_downs
        if preset.size % 2**depth:
            raise ValueError(f"pix2pix needs a size divisible by {2 ** depth}, got {preset.size}")
        cls = ColorizationRecipe if spec.data.layout == "colorization" else Pix2PixRecipe
        return cls(accelerator, spec.train, spec.pix2pix, preset.size)
    return DiTRecipe(accelerator, spec, preset)


def _grid(recipe: Recipe, sources: torch.Tensor, targets: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    outputs = recipe.sample(sources, torch.Generator().manual_seed(seed), steps)
    rows = torch.stack([sources, outputs.to(sources.device), targets], dim=1).flatten(0, 1)
    return make_grid(rows.float().cpu(), nrow=3, padding=2, pad_value=1.0)


def _grid_pairs(data: str | Path, preset: Preset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first few validation pairs (training pairs if there is no validation split), un-augmented."""
    try:
        dataset = PairedDataset(data, preset.paired.data, preset.size, "val", augment=False)
    except DataError:
        dataset = PairedDataset(data, preset.paired.data, preset.size, "train", augment=False)
    items = [dataset[i] for i in range(min(GRID_ROWS, len(dataset)))]
    return tuple(torch.stack([it[k] for it in items]).to(device) for k in ("source", "target"))


def train(
    preset: Preset,
    data: str | Path,
    out: str | Path,
    *,
    max_steps: int | None = None,
    model_kind: str | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) ``preset``'s model on the paired folder ``data`` into the checkpoint folder ``out``.

    ``max_steps`` stops early (at that step) without changing the schedule, which always spans
    ``[train] steps``; ``model_kind`` overrides ``[train] model`` ("dit" or "pix2pix").
    """
    if preset.paired is None:
        raise ValueError(f"preset {preset.name!r} (kind {preset.kind!r}) is not a paired-translation preset")
    spec, t = preset.paired, preset.paired.train
    kind = model_kind or t.model
    out = Path(out)
    record = _run_record(preset, kind)
    _check_same_run(out, record)
    dataset = PairedDataset(data, spec.data, preset.size, "train", augment=True)
    accelerator = Accelerator(mixed_precision=t.mixed_precision if torch.cuda.is_available() else "no")
    torch.manual_seed(t.seed)  # the initial weights depend on the config only
    recipe = build_recipe(kind, accelerator, preset)
    recipe.prepare(dataset, progress)
    main = accelerator.is_main_process
    step, seconds = 0, 0.0
    if (out / STATE_FILE).exists():
        state = load_state(out / STATE_FILE)
        recipe.load_state_dict(state["recipe"])
        step, seconds = int(state["step"]), float(state["seconds"])
        torch.set_rng_state(state["rng"])
    resumed_from = step
    if main:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "samples"):
            remove_stale_temps(folder)  # what a killed save left
        write_text_atomic(out / "run.json", json.dumps({**record, "preset": preset.name}, indent=2))
    grid_pairs = _grid_pairs(data, preset, accelerator.device)
    sampler = PairSampler(len(dataset), t.batch_size, t.seed, start=step * t.grad_accum,
                          rank=accelerator.process_index, world=accelerator.num_processes)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=t.num_workers,
                                              pin_memory=accelerator.device.type == "cuda"))
    stop = min(t.steps, max_steps or t.steps)

    def update(_step: int, g: torch.Generator) -> dict[str, float]:
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=g)))  # dropout and any other global draw
        batches = [{k: v.to(accelerator.device, non_blocking=True) for k, v in next(loader).items()}
                   for _ in range(t.grad_accum)]
        logs = recipe.update(batches, g)
        if accelerator.num_processes > 1:  # log the means over every process's micro-batches, not rank 0's
            values = accelerator.reduce(torch.tensor(list(logs.values()), device=accelerator.device), "mean")
            logs = dict(zip(logs, values.tolist()))
        return logs

    def sample(at: int) -> None:
        if main and (at % t.sample_every == 0 or at == stop):
            grid = _grid(recipe, *grid_pairs, t.sample_steps, t.seed)
            save_image(to_pil(grid), out / "samples" / f"step_{at:07d}.png")

    def save(at: int, seconds: float) -> None:
        if main:
            save_state(out / STATE_FILE, {"step": at, "seconds": seconds, "rng": torch.get_rng_state(),
                                          "recipe": recipe.state_dict()})
            with recipe.exported() as net:
                write_checkpoint(out, kind=kind, net=net, spec=spec, image_size=preset.size, step=at,
                                 preset=preset.name, defaults=checkpoint_defaults(preset),
                                 **recipe.checkpoint_kwargs())
        accelerator.wait_for_everyone()

    seconds = run_steps(
        update, start=step, stop=stop, seed=t.seed, seconds=seconds, rank=accelerator.process_index,
        samples_per_step=t.batch_size * t.grad_accum * accelerator.num_processes, log_every=t.log_every,
        save_every=t.save_every, save=save, log=LossLog(out / "loss.csv", step) if main else None,
        log_extra=lambda: {"lr": recipe.lr()}, after_step=sample, desc=f"train {kind}", show=main and progress)
    return TrainResult(out, max(step, stop), resumed_from, seconds, accelerator.num_processes, main)
