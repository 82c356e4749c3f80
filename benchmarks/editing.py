"""Editing benchmark: seconds, U-Net evaluations (NFE) and peak memory of SDEdit, the
semantic-discrepancy correction (released and trajectory variants) and PnP, side by side.

    python benchmarks/editing.py [--out benchmarks/results] [--quick] [--repeats N]
    python -m dit_translate bench [--out DIR] [--quick]          # the same, through the CLI

``benchmark_models`` measures one model bundle; ``run_editing_benchmark`` runs the two settings
(the ``tiny`` preset at 64 px, a random SD-1.5-size pipeline at 256 px) and writes
``editing.json``, ``editing.md`` and ``editing.png``. Every method is the project's own
(``dit_translate.methods``); times are the methods' own ``TranslationResult.seconds``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks.common import (  # noqa: E402
    chelsea,
    machine_info,
    machine_summary,
    memory_method,
    peak_memory,
    release_free_memory,
    sd15_size_models,
    write_results,
)
from dit_translate.diffusion.models import DiffusionModels
from dit_translate.methods.common import Progress, TranslationResult
from dit_translate.methods.correction import correct
from dit_translate.methods.pnp import pnp
from dit_translate.methods.sdedit import sdedit

METHODS = ("sdedit", "correct-released", "correct-full", "correct-trajectory", "pnp", "pnp-official")
LABELS = {
    "sdedit": "SDEdit",
    "correct-released": "correction (released)",
    "correct-full": "correction (full)",
    "correct-trajectory": "correction (trajectory)",
    "pnp": "PnP",
    "pnp-official": "PnP, official configuration",
}
PNP_OFFICIAL = {"steps": 50, "strength": 1.0, "inversion_steps": 999}
"""pnp-diffusers' own run (config_pnp.yaml, preprocess.py): 50 sampling steps from the fully inverted latent of a
999-step inversion (its reconstruction pass, which only writes recon.jpg, is not counted), guidance 7.5."""
PROMPT = "a comic drawing of a cat"
EXTRAS = ("steps_run", "start_timestep", "inversion_steps", "injections")
"""Method extras kept in the report."""
TARGETS: dict[tuple[str, str], tuple[str, float]] = {
    ("correct-released", "sdedit"): ("<=", 1.2),
    ("correct-trajectory", "sdedit"): ("<=", 1.2),
    ("pnp", "correct-released"): (">=", 10.0),
    ("pnp", "correct-trajectory"): (">=", 10.0),
    ("pnp-official", "correct-released"): (">=", 10.0),
}
"""Time-ratio targets ``(numerator, denominator) -> (op, bound)``: the correction adds a small constant
to SDEdit; PnP is at least 10x slower (the paper reports 11.2x against the released correction)."""



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
    if method.startswith("correct-"):
        return correct(models, image, prompt, variant=method.removeprefix("correct-"), seed=seed, **common)
    if method == "pnp":
        return pnp(models, image, prompt, inversion_steps=inversion_steps, **common)
    if method == "pnp-official":
        # timed runs: the official 999 grid; the warm-up (a coarser grid) inverts on the 50-step sampling grid
        grid = PNP_OFFICIAL["inversion_steps"] if inversion_steps >= PNP_OFFICIAL["inversion_steps"] else 50
        official = dict(PNP_OFFICIAL, inversion_steps=grid)
        return pnp(models, image, prompt, guidance=guidance, progress=progress, **official)
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


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``editing.json``, ``editing.md`` and ``editing.png`` into ``out``; return their paths."""
    return write_results(report, out, "editing", markdown, plot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny preset only (skip the SD-1.5-size U-Net)")
    parser.add_argument("--repeats", type=int, help="timed runs per method (default: 3 on tiny, 1 on SD-size)")
    args = parser.parse_args()
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    report = run_editing_benchmark(args.out, quick=args.quick, repeats=args.repeats)
    print((args.out / "editing.md").read_text(), end="")
    print(f"wrote {args.out}/editing.{{json,md,png}} ({len(report['settings'])} setting(s))", file=sys.stderr)


if __name__ == "__main__":
    main()
