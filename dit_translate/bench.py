"""Editing benchmark: seconds, U-Net evaluations (NFE) and peak memory of SDEdit, the
semantic-discrepancy correction (released and trajectory variants) and PnP, side by side.

``benchmark_models`` measures one model bundle; ``run_editing_benchmark`` runs the two settings
(the ``tiny`` preset at 64 px, a random SD-1.5-size pipeline at 256 px) and writes
``editing.json``, ``editing.md`` and ``editing.png``. Every method is the project's own
(``dit_translate.methods``); times are the methods' own ``TranslationResult.seconds``.
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from PIL import Image
from tqdm import tqdm

from dit_translate import images
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.methods.common import Progress, TranslationResult
from dit_translate.methods.correction import correct
from dit_translate.methods.pnp import pnp
from dit_translate.methods.sdedit import sdedit

METHODS = ("sdedit", "correct-released", "correct-trajectory", "pnp")
LABELS = {
    "sdedit": "SDEdit",
    "correct-released": "correction (released)",
    "correct-trajectory": "correction (trajectory)",
    "pnp": "PnP",
}
PROMPT = "a comic drawing of a cat"
EXTRAS = ("steps_run", "start_timestep", "inversion_steps", "injections")
"""Method extras kept in the report."""
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("correct-released", "sdedit"): ("<=", 1.2),
    ("correct-trajectory", "sdedit"): ("<=", 1.2),
    ("pnp", "correct-released"): (">=", 10.0),
    ("pnp", "correct-trajectory"): (">=", 10.0),
}
"""Time-ratio targets ``(numerator, denominator) -> (op, bound)``: the correction adds a small constant
to SDEdit; PnP is at least 10x slower (the paper reports 11.2x against the released correction)."""


# ---- measurement ------------------------------------------------------------------------------
def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS baselines are honest."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def memory_method(device: torch.device) -> str:
    """How ``peak_memory`` measures on ``device``."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the allocation before the run"
    return "peak process RSS over the pre-run baseline (psutil, sampled every 10 ms by a thread)"


@contextmanager
def peak_memory(device: torch.device, interval: float = 0.01) -> Iterator[Callable[[], int]]:
    """``with peak_memory(dev) as peak: ...; peak()`` gives the peak memory increase in bytes."""
    release_free_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield lambda: torch.cuda.max_memory_allocated(device) - base
        return
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak[0] - base
    finally:
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], proc.memory_info().rss)


def run_method(
    method: str,
    models: DiffusionModels,
    image: torch.Tensor,
    *,
    steps: int,
    strength: float,
    guidance: float,
    inversion_steps: int,
    prompt: str = PROMPT,
    seed: int = 0,
    progress: Progress | None = None,
) -> TranslationResult:
    """One call of ``method`` (one of ``METHODS``) with each method's own defaults for everything else."""
    common = dict(steps=steps, strength=strength, guidance=guidance, progress=progress)
    if method == "sdedit":
        return sdedit(models, image, prompt, seed=seed, **common)
    if method in ("correct-released", "correct-trajectory"):
        return correct(models, image, prompt, variant=method.removeprefix("correct-"), seed=seed, **common)
    if method == "pnp":
        return pnp(models, image, prompt, inversion_steps=inversion_steps, **common)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def ratios(methods: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ratios of ``TARGETS`` from per-method medians: wall ``time`` (judged against the target),
    process ``cpu`` time (the same judgement, robust to other processes' load) and ``nfe``."""
    out = {}
    for (num, den), (op, bound) in TARGETS.items():
        if num not in methods or den not in methods:
            continue
        a, b = methods[num], methods[den]
        time_ratio, cpu_ratio = a["seconds"] / b["seconds"], a["cpu_seconds"] / b["cpu_seconds"]
        meets = (lambda v: v <= bound) if op == "<=" else (lambda v: v >= bound)
        out[f"{num}/{den}"] = {
            "time": time_ratio,
            "cpu": cpu_ratio,
            "nfe": a["nfe"] / b["nfe"],
            "target": f"{op} {bound:g}",
            "pass": meets(time_ratio),
            "cpu_pass": meets(cpu_ratio),
        }
    return out


class _Bar:
    """One tqdm bar over the timed and warm-up runs; method progress shows as its postfix (throttled)."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True)
        self.last = 0.0

    def start(self, description: str) -> None:
        self.bar.set_description(description)

    def progress(self, done: int, total: int, description: str) -> None:
        now = time.monotonic()
        if done == total or now - self.last > 0.5:
            self.last = now
            self.bar.set_postfix_str(f"{description} {done}/{total}")

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def benchmark_models(
    models: DiffusionModels,
    image: torch.Tensor,
    steps: int = 20,
    *,
    strength: float = 0.8,
    guidance: float = 7.5,
    inversion_steps: int = 999,
    repeats: int = 3,
    methods: tuple[str, ...] = METHODS,
    bar: _Bar | None = None,
    name: str = "model",
) -> dict[str, Any]:
    """Warm up each method once, then time ``repeats`` runs of each; per-method medians and ratios.

    Per run: wall seconds (the method's own ``seconds``) and this process's CPU seconds (user +
    system, all threads), which other processes' load barely changes.
    The warm-up of PnP inverts over the ``steps`` grid instead of ``inversion_steps`` (the same code
    paths at a fraction of the cost). Memory is the largest peak over the timed runs.
    """
    own_bar = bar is None
    bar = bar or _Bar(len(methods) * (1 + repeats))
    kwargs = dict(steps=steps, strength=strength, guidance=guidance, progress=bar.progress)
    results: dict[str, dict[str, Any]] = {}
    load_start = os.getloadavg()[0]
    for method in methods:
        bar.start(f"{name}: {method} warm-up")
        run_method(method, models, image, inversion_steps=min(steps, inversion_steps), **kwargs)
        bar.advance()
        runs, cpu, peaks = [], [], []
        for i in range(repeats):
            bar.start(f"{name}: {method} {i + 1}/{repeats}")
            with peak_memory(models.device) as peak:
                cpu_start = time.process_time()
                result = run_method(method, models, image, inversion_steps=inversion_steps, **kwargs)
                cpu.append(time.process_time() - cpu_start)
            runs.append(result.seconds)
            peaks.append(peak())
            bar.advance()
        results[method] = {
            "seconds": statistics.median(runs),
            "runs": runs,
            "cpu_seconds": statistics.median(cpu),
            "cpu_runs": cpu,
            "nfe": result.nfe,
            "peak_memory_mb": max(peaks) / 2**20,
            "peak_memory_runs_mb": [p / 2**20 for p in peaks],
            "extras": {k: v for k, v in result.extras.items() if k in EXTRAS},
        }
    if own_bar:
        bar.close()
    h, w = image.shape[-2:]
    return {
        "name": name,
        "size": [int(w), int(h)],
        "unet_params_m": sum(p.numel() for p in models.unet.parameters()) / 1e6,
        "repeats": repeats,
        "loadavg_1min": [load_start, os.getloadavg()[0]],
        "methods": results,
        "ratios": ratios(results),
    }


# ---- settings -----------------------------------------------------------------------------------
def chelsea(side: int) -> torch.Tensor:
    """scikit-image's public-domain cat photo, centre-cropped square and resized: (1, 3, side, side)."""
    from skimage import data

    img = Image.fromarray(data.chelsea())
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    return images.to_tensor(images.resize_to(img.crop((left, top, left + s, top + s)), (side, side)))


def sd15_size_models(device: torch.device, dtype: torch.dtype, seed: int = 0) -> DiffusionModels:
    """Random weights in Stable Diffusion 1.5's shapes: U-Net (859.5M), x8 VAE, 768-wide CLIP text encoder."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTokenizer

    from dit_translate.tiny.random_sd import SD_SCHEDULER, random_text_encoder, random_unet
    from dit_translate.tiny.tokenizer import write_clip_tokenizer

    torch.manual_seed(seed)
    unet = random_unet(sd15_size=True)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=256,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp))
    return DiffusionModels.from_components(
        unet, DDIMScheduler(**SD_SCHEDULER), vae, random_text_encoder(768), tokenizer,
        device=device, dtype=dtype, name="sd15-size-random",
    )


def machine_info() -> dict[str, Any]:
    """Torch/diffusers versions, device, threads, CPU model, memory and date of this run."""
    import diffusers

    from dit_translate.runtime import pick_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = pick_device()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "ram_gb": psutil.virtual_memory().total / 2**30,
    }


def _tiny_models() -> tuple[DiffusionModels, bool, str]:
    """The ``tiny`` preset through the model store: its models, whether untrained, and a label."""
    from dit_translate.store import ModelStore

    loaded = ModelStore().get("tiny")
    kind = "UNTRAINED random fallback" if loaded.untrained else "trained weights"
    return loaded.models, loaded.untrained, f"tiny preset ({kind}, {loaded.folder})"


def run_editing_benchmark(out: Path, quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Benchmark the ``tiny`` preset at 64 px and (unless ``quick``) a random SD-1.5-size pipeline at
    256 px; write ``editing.{json,md,png}`` into ``out`` and return the report.

    ``repeats`` timed runs per method (default 3 on tiny, 1 on the SD-size pipeline), after a warm-up.
    """
    from dit_translate.runtime import pick_device, pick_dtype

    device = pick_device()
    config = {"steps": 20, "strength": 0.8, "guidance": 7.5, "pnp_inversion_steps": 999, "prompt": PROMPT, "seed": 0}
    plan = [("tiny", 64, repeats or 3)] + ([] if quick else [("sd15-size", 256, repeats or 1)])
    bar = _Bar(sum(len(METHODS) * (1 + n) for *_, n in plan))
    settings = []
    for key, side, n in plan:
        bar.start(f"{key}: loading")
        if key == "tiny":
            models, untrained, label = _tiny_models()
        else:
            models, untrained = sd15_size_models(device, pick_dtype(device)), True
            label = "random SD-1.5-size pipeline (859.5M-param U-Net, SD VAE shapes, 768-wide text encoder)"
        setting = benchmark_models(
            models, chelsea(side), config["steps"], strength=config["strength"], guidance=config["guidance"],
            inversion_steps=config["pnp_inversion_steps"], repeats=n, bar=bar, name=key,
        )
        settings.append({**setting, "label": label, "untrained": untrained})
        del models  # free this setting's weights before building the next
        release_free_memory()
    bar.close()
    report = make_report(settings, config, device)
    write_report(report, out)
    return report


def make_report(settings: list[dict[str, Any]], config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The full report: machine info, the run's ``config`` and how it measured, and the ``settings``."""
    return {
        "machine": machine_info(),
        "config": {
            **config,
            "warmup": f"each method once before timing (PnP's warm-up inverts over the {config['steps']}-step grid)",
            "timing": "median wall time: the methods' own TranslationResult.seconds (text embeddings cached by "
            "the warm-up); median CPU time: this process's user + system seconds over the same call",
            "memory": memory_method(device),
            "nfe": "U-Net evaluations per sample (a CFG step counts 2): SDEdit 2 per step run; released correction "
            "+1 clean-source pass; trajectory correction +1 inversion pass per step run; PnP inversion passes "
            "+ 2 per step + 1 source pass per step with an injection window open",
        },
        "tiny_untrained": next((s["untrained"] for s in settings if s["name"] == "tiny"), None),
        "settings": settings,
    }


# ---- outputs ------------------------------------------------------------------------------------
def _fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def machine_summary(m: dict[str, Any]) -> str:
    """One markdown line describing the machine of ``machine_info()``."""
    return (
        f"{m['date']}; torch {m['torch']}, diffusers {m['diffusers']}; device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        + f"; CPU {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch thread(s)"
        + (f" (OMP_NUM_THREADS={m['omp_num_threads']})" if m.get("omp_num_threads") else "")
        + f", {m['ram_gb']:.0f} GB RAM."
    )


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: conditions, one table per setting, then its ratios against the targets."""
    m, c = report["machine"], report["config"]
    lines = [
        "# Editing benchmark: SDEdit vs. correction vs. PnP",
        "",
        machine_summary(m),
        "",
        f"Steps {c['steps']}, strength {c['strength']} (all methods; PnP inverts up to the start timestep), "
        f"guidance {c['guidance']}, PnP inversion grid {c['pnp_inversion_steps']}, "
        f"prompt \"{c['prompt']}\", seed {c['seed']}.",
        f"Warm-up: {c['warmup']}. Time: {c['timing']}. Peak memory: {c['memory']}. NFE: {c['nfe']}.",
    ]
    for s in report["settings"]:
        w, h = s["size"]
        load = s["loadavg_1min"]
        lines += [
            "",
            f"## {s['name']}: {s['label']}, {w}x{h}",
            "",
            f"U-Net {s['unet_params_m']:.1f}M parameters; {s['repeats']} timed run(s) per method; "
            f"1-min load average {load[0]:.2f} at start, {load[1]:.2f} at end.",
            "",
            "| method | wall s (median) | wall runs (s) | CPU s (median) | NFE | peak memory (MB) |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for key, r in s["methods"].items():
            runs = ", ".join(f"{x:.2f}" for x in r["runs"])
            lines.append(
                f"| {LABELS[key]} | {r['seconds']:.2f} | {runs} | {r['cpu_seconds']:.2f} | {r['nfe']} | "
                f"{r['peak_memory_mb']:.1f} |"
            )
        lines += [
            "",
            "| ratio | wall time | CPU time | NFE | target (time) | result (wall) | result (CPU) |",
            "|---|---:|---:|---:|---|---|---|",
        ]
        for key, r in s["ratios"].items():
            num, den = key.split("/")
            lines.append(
                f"| {LABELS[num]} / {LABELS[den]} | {_fmt_ratio(r['time'])} | {_fmt_ratio(r['cpu'])} | "
                f"{_fmt_ratio(r['nfe'])} | {r['target']} | {'PASS' if r['pass'] else 'FAIL'} | "
                f"{'PASS' if r['cpu_pass'] else 'FAIL'} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars of median wall seconds per method per setting (log scale), NFE written on each bar,
    median CPU seconds as a black tick."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = report["settings"]
    fig = Figure(figsize=(2.0 + 3.2 * len(settings), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(METHODS)
    x = np.arange(len(settings))
    for i, method in enumerate(METHODS):
        rows = [s["methods"].get(method, {}) for s in settings]
        pos = x + (i - (len(METHODS) - 1) / 2) * width
        bars = ax.bar(pos, [r.get("seconds", np.nan) for r in rows], width, label=LABELS[method])
        ax.bar_label(bars, labels=[f"NFE\n{r['nfe']}" if r else "" for r in rows], fontsize=7, padding=2)
        ax.scatter(pos, [r.get("cpu_seconds", np.nan) for r in rows], marker="_", s=300, color="black", zorder=3,
                   label="CPU seconds" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{s['name']}\n{s['size'][0]}x{s['size'][1]}" for s in settings])
    ax.set_ylabel("wall seconds per edit (median, log scale)")
    ax.set_title(f"Editing cost, {report['config']['steps']} steps, strength {report['config']['strength']}, "
                 f"{report['machine']['device']}")
    ax.margins(y=0.25)
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path, dpi=120)


def write_results(report: dict[str, Any], out: str | Path, name: str,
                  to_markdown: Callable[[dict[str, Any]], str],
                  to_plot: Callable[[dict[str, Any], Path], None]) -> dict[str, Path]:
    """Write a benchmark's ``name``.json, .md (``to_markdown(report)``) and .png (``to_plot(report, path)``)
    into ``out``; return their paths by extension."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{name}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["md"].write_text(to_markdown(report))
    to_plot(report, paths["png"])
    return paths


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``editing.json``, ``editing.md`` and ``editing.png`` into ``out``; return their paths."""
    return write_results(report, out, "editing", markdown, plot)
