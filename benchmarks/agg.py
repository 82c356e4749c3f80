"""AGG benchmark: seconds, U-Net evaluations (NFE), U-Net backward passes and peak memory of AGG
against plain DDIM and against two baselines that guide through the U-Net:

* ``diffuseit``: the DiffuseIT-style baseline the paper compares with (40 s vs AGG's 15 s): one MCG
  step through the U-Net at every reverse step (the guidance window spans the whole run), no cheap
  refinement;
* ``all-mcg K``: AGG's windows, but each of the K refinement iterations is another MCG step through
  the U-Net (``refine="mcg"``), a stricter ablation of the refinement alone.

    python benchmarks/agg.py [--out benchmarks/results] [--quick] [--steps 50] [--inner-steps 1,4] [--repeats N]

All variants are the same sampler (``dit_translate.methods.agg.agg``) at equal steps, with the same
windows, seed and text-guidance loss; only the switches differ. Settings: the ``tiny`` preset (at its
working size, 96 px; its guidance CLIP) and random weights in Stable Diffusion 1.5's shapes at 256 px (built by
``benchmarks.common.sd15_size_models``) guided by a random-init open_clip ViT-B-32 (the sd15
preset's guidance architecture). Writes agg.json, agg.md and agg.png into --out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    chelsea,
    machine_info,
    machine_summary,
    memory_method,
    peak_memory,
    sd15_size_models,
    write_results,
)
from dit_translate.methods.agg import AGGConfig, agg  # noqa: E402
from dit_translate.methods.losses import StyleLoss, text_guidance  # noqa: E402

PROMPT = "a comic drawing of a cat"
TARGETS = {"agg/ddim": ("<=", 3.0), "diffuseit/agg": (">=", 1.5), "all-mcg/agg": (">=", 1.5)}
"""Time-ratio targets: AGG costs at most 3x plain DDIM and is at least 1.5x faster than MCG-everywhere."""
SKIP = 0.4
DIFFUSEIT = {"edit": 1.0 - SKIP, "boost": 0.0, "refine": "none"}
"""MCG through the U-Net at every run step but the final one (edit window = the whole run, no last window)."""


def variants(inner_steps: list[int]) -> dict[str, dict[str, Any]]:
    """Variant name -> ``AGGConfig`` switches: plain DDIM once, AGG and all-MCG per K."""
    out: dict[str, dict[str, Any]] = {"ddim": {"mcg": False, "refine": "none"},
                                      "diffuseit": DIFFUSEIT}
    for k in inner_steps:
        out[f"agg K={k}"] = {"inner_steps": k}
        out[f"all-mcg K={k}"] = {"refine": "mcg", "inner_steps": k}
    return out


def measure(models, image: torch.Tensor, style: StyleLoss, switches: dict[str, dict[str, Any]], *, steps: int,
            guidance: float, repeats: int, warmup: bool) -> dict[str, dict[str, Any]]:
    """Run every variant ``repeats`` times in interleaved rounds (so load drift on a shared machine hits all
    alike), after an optional warm-up round. Per variant: median wall seconds (the sampler's own), median
    process CPU seconds, NFE, U-Net backward passes, peak memory and the final guidance loss."""
    runs: dict[str, dict[str, list]] = {key: {"wall": [], "cpu": [], "mem": []} for key in switches}
    last = {}
    for round_ in range(repeats + int(warmup)):
        for key, sw in switches.items():
            print(f"  round {round_ + 1 - int(warmup)}/{repeats}: {key}", file=sys.stderr, flush=True)
            start = time.process_time()
            with peak_memory(models.device) as peak:
                result = agg(models, image, style, AGGConfig(steps=steps, skip=SKIP, **sw), prompt=PROMPT, guidance=guidance,
                             seed=0)
            if warmup and round_ == 0:
                continue
            runs[key]["cpu"].append(time.process_time() - start)
            runs[key]["wall"].append(result.seconds)
            runs[key]["mem"].append(peak() / 2**20)
            last[key] = result
    out = {}
    for key, r in runs.items():
        result = last[key]
        with torch.no_grad():
            loss = style(result.image.clamp(-1, 1).to(models.device), torch.Generator().manual_seed(0)).item()
        out[key] = {
            "seconds": statistics.median(r["wall"]), "runs": r["wall"], "cpu_seconds": statistics.median(r["cpu"]),
            "cpu_runs": r["cpu"], "nfe": result.nfe, "unet_backwards": result.extras["unet_backwards"],
            "edit_steps": result.extras["edit_steps"], "steps_run": result.extras["steps_run"],
            "peak_memory_mb": max(r["mem"]), "guidance_loss": loss,
        }
    return out


def ratios(results: dict[str, dict[str, Any]], inner_steps: list[int]) -> dict[str, dict[str, Any]]:
    """``agg/ddim``, ``diffuseit/agg`` and ``all-mcg/agg`` time (and NFE) ratios per K, against ``TARGETS``."""
    out = {}
    for k in inner_steps:
        pairs = {"agg/ddim": (f"agg K={k}", "ddim"), "diffuseit/agg": ("diffuseit", f"agg K={k}"),
                 "all-mcg/agg": (f"all-mcg K={k}", f"agg K={k}")}
        for key, (num, den) in pairs.items():
            op, bound = TARGETS[key]
            value = results[num]["seconds"] / results[den]["seconds"]
            out[f"{num} / {den}"] = {
                "time": value, "cpu_time": results[num]["cpu_seconds"] / results[den]["cpu_seconds"],
                "nfe": results[num]["nfe"] / results[den]["nfe"], "target": f"{op} {bound:g}",
                "pass": value <= bound if op == "<=" else value >= bound,
            }
    return out


def tiny_setting():
    """The ``tiny`` preset's models and guidance CLIP, through the store."""
    from dit_translate.store import ModelStore

    store = ModelStore()
    loaded, guidance = store.get("tiny"), store.guidance("tiny")
    clips = guidance.clips()
    label = f"tiny preset ({'UNTRAINED random fallback' if loaded.untrained else 'trained weights'}), " \
            f"guidance CLIP {', '.join(c.name for c in clips)}{' (UNTRAINED)' if guidance.untrained else ''}"
    return loaded.models, clips, label, loaded.preset.size


def sd15_setting():
    """Random SD-1.5-size pipeline and a random-init open_clip ViT-B-32 (the sd15 preset's guidance architecture)."""
    import open_clip

    from dit_translate.encoders import ClipEncoder
    from dit_translate.runtime import pick_device, pick_dtype

    device = pick_device()
    models = sd15_size_models(device, pick_dtype(device))
    clip = ClipEncoder.from_model(open_clip.create_model("ViT-B-32", device=device), open_clip.get_tokenizer("ViT-B-32"),
                                  "ViT-B-32 (random init)")
    label = "random SD-1.5-size pipeline (859.5M-param U-Net, SD VAE shapes), random-init open_clip ViT-B-32"
    return models, (clip,), label, 256


def run(out: Path, *, quick: bool, steps: int, inner_steps: list[int], repeats: int | None) -> dict[str, Any]:
    plan = [("tiny", tiny_setting, repeats or 5, True)]
    if not quick:
        plan.append(("sd15-size", sd15_setting, repeats or 1, False))
    settings = []
    for name, build, n, warmup in plan:
        print(f"{name}: loading", file=sys.stderr, flush=True)
        models, clips, label, side = build()
        image = chelsea(side)
        style = text_guidance(clips, PROMPT, image)
        load = [os.getloadavg()[0]]
        results = measure(models, image, style, variants(inner_steps), steps=steps, guidance=7.5, repeats=n,
                          warmup=warmup)
        load.append(os.getloadavg()[0])
        settings.append({
            "name": name, "label": label, "size": [side, side], "repeats": n, "warmup": warmup,
            "unet_params_m": sum(p.numel() for p in models.unet.parameters()) / 1e6, "loadavg_1min": load,
            "variants": results, "ratios": ratios(results, inner_steps),
        })
        del models, clips, style
    device = torch.device(machine_info()["device"])
    report = {
        "machine": machine_info(),
        "config": {"steps": steps, "skip": SKIP, "edit": 0.2, "boost": 0.2, "guidance": 7.5, "prompt": PROMPT, "seed": 0,
                   "inner_steps": inner_steps, "memory": memory_method(device),
                   "timing": "median of the sampler's own TranslationResult.seconds (inversion included), variants "
                             "interleaved round by round; CPU = this process's CPU seconds (robust to other load)"},
        "settings": settings,
    }
    write_results(report, out, "agg", markdown, plot)
    return report


def markdown(report: dict[str, Any]) -> str:
    m, c = report["machine"], report["config"]
    lines = [
        "# AGG benchmark: AGG vs. plain DDIM vs. MCG through the U-Net (DiffuseIT-style, and at every refinement)",
        "",
        machine_summary(m),
        "",
        f"Grid of {c['steps']} DDIM steps, the first {c['skip']:.0%} skipped (inversion and sampling run the rest), "
        f"edit window {c['edit']} of the grid, CFG {c['guidance']}, text guidance \"{c['prompt']}\", seed {c['seed']}. "
        "All variants are one sampler: `ddim` = `mcg=False, refine=\"none\"`; `agg` = defaults (one MCG step, K AdamW "
        "steps on an x0 bias without U-Net backprop, asymmetric update); `diffuseit` = one MCG step through the U-Net at "
        "every run step but the last (`edit=0.6, boost=0, refine=\"none\"`: the DiffuseIT-style baseline of the "
        "paper's 40 s vs 15 s); `all-mcg` = AGG's windows with `refine=\"mcg\"` (each of the K refinement "
        "iterations is another MCG step through the U-Net: a stricter ablation of the refinement alone).",
        f"Time: {c['timing']}. Peak memory: {c['memory']}.",
        "",
        "Cost model: per edit step AGG pays one U-Net forward+backward (the MCG step, which also gives the "
        "unguided eps) and 1 + K loss evaluations with their backward (VAE decode + CLIP crops on latent models); "
        "all-MCG pays 1 + K U-Net forward+backward passes and the same 1 + K loss evaluations. AGG saves K U-Net "
        "backprops per edit step, so its advantage grows with K, and at K = 1 it is small wherever a loss "
        "evaluation costs about as much as a U-Net backprop (the VAE decoder's backward at 256 px on SD-size). "
        "DiffuseIT-style pays a U-Net forward+backward and a loss evaluation at every run step, not only in the "
        "edit window.",
    ]
    for s in report["settings"]:
        load = s["loadavg_1min"]
        lines += [
            "", f"## {s['name']}: {s['label']}, {s['size'][0]}x{s['size'][1]}", "",
            f"U-Net {s['unet_params_m']:.1f}M parameters; {s['repeats']} timed run(s) per variant"
            f"{' after a warm-up' if s['warmup'] else ' (no warm-up)'}; 1-min load average {load[0]:.2f} at start, "
            f"{load[1]:.2f} at end.", "",
            "| variant | seconds (median) | timed runs (s) | CPU seconds (median) | NFE | U-Net backward passes | "
            "edit steps | peak memory (MB) | guidance loss |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key, r in s["variants"].items():
            runs = ", ".join(f"{x:.2f}" for x in r["runs"])
            lines.append(f"| {key} | {r['seconds']:.2f} | {runs} | {r['cpu_seconds']:.2f} | {r['nfe']} | {r['unet_backwards']} | "
                         f"{r['edit_steps']} | {r['peak_memory_mb']:.0f} | {r['guidance_loss']:.3f} |")
        lines += ["", "| ratio | time | CPU time | NFE | target (time) | result |", "|---|---:|---:|---:|---|---|"]
        for key, r in s["ratios"].items():
            lines.append(f"| {key} | {r['time']:.2f}x | {r['cpu_time']:.2f}x | {r['nfe']:.2f}x | {r['target']} | "
                         f"{'PASS' if r['pass'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars of median seconds per variant per setting (log scale), NFE and backward passes on each bar."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    settings = report["settings"]
    keys = list(settings[0]["variants"])
    fig = Figure(figsize=(2.5 + 3.5 * len(settings), 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(keys)
    x = np.arange(len(settings))
    for i, key in enumerate(keys):
        rows = [s["variants"][key] for s in settings]
        bars = ax.bar(x + (i - (len(keys) - 1) / 2) * width, [r["seconds"] for r in rows], width, label=key)
        ax.bar_label(bars, labels=[f"{r['nfe']}\n{r['unet_backwards']}bw" for r in rows], fontsize=6, padding=2)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{s['name']}\n{s['size'][0]}x{s['size'][1]}" for s in settings])
    ax.set_ylabel("seconds per translation (median, log scale)")
    ax.set_title(f"AGG cost, {report['config']['steps']}-step grid, {report['machine']['device']} "
                 "(labels: NFE, U-Net backward passes)", fontsize=9)
    ax.margins(y=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="output folder")
    parser.add_argument("--quick", action="store_true", help="tiny preset only (skip the SD-1.5-size U-Net)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM grid (default 50: 30 steps run, 9 of them edit)")
    parser.add_argument("--inner-steps", default="1,4", help="comma-separated K values (AdamW / MCG refinement iterations)")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (default: 5 on tiny, 1 on SD-size)")
    args = parser.parse_args()
    ks = [int(k) for k in args.inner_steps.split(",")]
    if args.repeats is not None and args.repeats < 1 or min(ks) < 1 or args.steps < 2:
        parser.error("--repeats, --inner-steps values must be at least 1 and --steps at least 2")
    run(args.out, quick=args.quick, steps=args.steps, inner_steps=ks, repeats=args.repeats)
    print((args.out / "agg.md").read_text(), end="")


if __name__ == "__main__":
    main()
