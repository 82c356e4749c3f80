"""DiT benchmark: our ``PairedDiT`` against diffusers' ``DiTTransformer2DModel`` of the same size and patch.

    python benchmarks/dit.py [--out benchmarks/results] [--sizes S,B] [--rounds 3]

Setting: 256 x 256 images in SD-VAE latent space (32 x 32 x 4 latents), random weights, fp32.
Measured per model: training samples/s (forward, MSE, backward, AdamW step), sampling images/s (a
DDIM loop with classifier-free guidance, both branches in one batch, through the project's DDIM), and
peak memory. Every measurement runs in its own subprocess (clean memory peaks) and rounds interleave
the two models. On a shared machine other jobs only ever add time, so the headline numbers are the
best (fastest) iteration over all rounds; medians are reported next to them. Writes dit.json, dit.md
and dit.png. The target is ours / diffusers >= 0.95 in both speeds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

MODELS = ("ours", "diffusers")
TARGET = 0.95
LATENT = 32


def _build(model: str, size: str):
    """A random DiT-<size>/2 for 4-channel 32 x 32 latents and a call ``f(x, t, cond_or_labels, keep)``."""
    import torch
    from diffusers import DiTTransformer2DModel

    from dit_translate.paired.config import DIT_SIZES
    from dit_translate.paired.dit import PairedDiT

    torch.manual_seed(0)
    depth, hidden, heads = DIT_SIZES[size]
    if model == "ours":
        net = PairedDiT.of_size(size, 2, in_channels=4, cond_dim=768)

        def call(x, t, cond, keep=None):
            return net(x, t, cond, keep=keep)

        def condition(b):
            return torch.randn(b, 768)
    else:
        net = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4,
                                    out_channels=4, num_layers=depth, sample_size=LATENT, patch_size=2)

        def call(x, t, labels, keep=None):
            if keep is not None:  # dropped rows get the null class, as DiT's CFG does
                labels = torch.where(keep, labels, torch.full_like(labels, 1000))
            return net(x, t, labels).sample

        def condition(b):
            return torch.randint(0, 1000, (b,))
    return net, call, condition


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (model, size, mode) in this process; returns seconds per iteration and memory."""
    import torch

    from dit_translate.diffusion.ddim import Schedule, ddim_sample, make_steps
    from dit_translate.paired.config import DiffusionSpec
    from dit_translate.paired.sampling import make_noise_scheduler

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, call, condition = _build(spec["model"], spec["size"])
    net.to(device)
    params = sum(p.numel() for p in net.parameters())
    b = spec["batch"]
    x = torch.randn(b, 4, LATENT, LATENT, device=device)
    cond = condition(b).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if spec["mode"] == "train":
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        t = torch.randint(0, 1000, (b,), device=device)

        def once() -> None:
            loss = torch.nn.functional.mse_loss(call(x, t, cond), x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        warm_up = once  # a whole step: it also allocates the optimizer state
    else:
        net.eval()
        scheduler = make_noise_scheduler(DiffusionSpec())
        schedule, grid = Schedule.from_scheduler(scheduler), make_steps(scheduler, spec["steps"])
        keep = torch.arange(2 * b, device=device) < b

        def eps_fn(z, step):
            tt = torch.full((2 * b,), step, device=device)
            eps_c, eps_u = call(torch.cat([z, z]), tt, torch.cat([cond, cond]), keep).chunk(2)
            return eps_u + 4.0 * (eps_c - eps_u)

        def once() -> None:
            with torch.inference_mode():
                ddim_sample(eps_fn, x, grid, schedule)

        def warm_up() -> None:
            with torch.inference_mode():
                eps_fn(x, grid.timesteps[0])

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    warm_up()
    times = []
    for _ in range(spec["iters"]):
        sync()
        start = time.perf_counter()
        once()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"seconds": times, "peak_bytes": peak, "params": params, "device": str(device)}


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"worker {spec} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    """Versions, device and CPU of this run."""
    import diffusers
    import torch

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "cpu": cpu,
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def run(sizes: list[str], rounds: int, batch: int, sample_batch: int, steps: int, iters: int) -> dict[str, Any]:
    """Interleaved rounds of every (size, mode, model) measurement; medians over rounds."""
    raw: dict[tuple, list[dict]] = {}
    for r in range(rounds):
        for size in sizes:
            for mode in ("train", "sample"):
                for model in MODELS if r % 2 == 0 else MODELS[::-1]:
                    spec = {"model": model, "size": size, "mode": mode, "steps": steps, "iters": iters,
                            "batch": batch if mode == "train" else sample_batch}
                    result = _measure(spec)
                    raw.setdefault((size, mode, model), []).append(result)
                    print(f"round {r + 1}/{rounds} DiT-{size}/2 {mode:6s} {model:9s} "
                          f"{min(result['seconds']):.3f} s", file=sys.stderr, flush=True)
    results: dict[str, Any] = {}
    for size in sizes:
        entry: dict[str, Any] = {}
        for model in MODELS:
            train, sample = raw[(size, "train", model)], raw[(size, "sample", model)]
            train_s = [s for r in train for s in r["seconds"]]
            sample_s = [s for r in sample for s in r["seconds"]]
            entry[model] = {
                "params_m": train[0]["params"] / 1e6,
                "train_samples_per_s": batch / min(train_s),
                "sample_images_per_s": sample_batch / min(sample_s),
                "train_samples_per_s_median": batch / statistics.median(train_s),
                "sample_images_per_s_median": sample_batch / statistics.median(sample_s),
                "train_peak_mb": max(r["peak_bytes"] for r in train) / 2**20,
                "sample_peak_mb": max(r["peak_bytes"] for r in sample) / 2**20,
                "train_seconds": train_s,
                "sample_seconds": sample_s,
            }
        entry["ratio_train"] = entry["ours"]["train_samples_per_s"] / entry["diffusers"]["train_samples_per_s"]
        entry["ratio_sample"] = entry["ours"]["sample_images_per_s"] / entry["diffusers"]["sample_images_per_s"]
        for key in ("train_samples_per_s_median", "sample_images_per_s_median"):
            entry[f"ratio_{key}"] = entry["ours"][key] / entry["diffusers"][key]
        entry["meets_target"] = min(entry["ratio_train"], entry["ratio_sample"]) >= TARGET
        results[f"DiT-{size}/2"] = entry
    device = raw[(sizes[0], "train", "ours")][0]["device"]
    return {
        "settings": {"latent": [4, LATENT, LATENT], "image": 256, "train_batch": batch, "sample_batch": sample_batch,
                     "ddim_steps": steps, "cfg": "both branches in one batch (2 x sample_batch)", "rounds": rounds,
                     "iters_per_round": iters, "dtype": "float32", "device": device,
                     "memory": "CUDA max_memory_allocated" if device.startswith("cuda") else
                               "peak RSS increase of the measuring process over its pre-run RSS"},
        "machine": machine(),
        "target": f"ours / diffusers >= {TARGET}",
        "results": results,
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [f"DiT speed, ours (`PairedDiT`) vs diffusers `DiTTransformer2DModel`: {s['image']} px images as "
             f"{'x'.join(map(str, s['latent']))} latents, {s['dtype']}, {s['device']}, {s['rounds']} interleaved "
             f"rounds of {s['iters_per_round']} timed iterations; training batch {s['train_batch']}, sampling batch "
             f"{s['sample_batch']} with {s['ddim_steps']} DDIM steps and CFG. Best iteration (median in brackets).",
             "", "| model | params (M) | train samples/s | sampling images/s | train peak (MB) | sampling peak (MB) |",
             "|---|---|---|---|---|---|"]
    for name, entry in report["results"].items():
        for model in MODELS:
            m = entry[model]
            lines.append(f"| {name} {model} | {m['params_m']:.1f} | {m['train_samples_per_s']:.3f} "
                         f"({m['train_samples_per_s_median']:.3f}) | {m['sample_images_per_s']:.3f} "
                         f"({m['sample_images_per_s_median']:.3f}) | {m['train_peak_mb']:.0f} | "
                         f"{m['sample_peak_mb']:.0f} |")
    lines += ["", "| model | ours / diffusers, training | ours / diffusers, sampling | target >= 0.95 |",
              "|---|---|---|---|"]
    for name, entry in report["results"].items():
        lines.append(f"| {name} | {entry['ratio_train']:.3f} ({entry['ratio_train_samples_per_s_median']:.3f}) | "
                     f"{entry['ratio_sample']:.3f} ({entry['ratio_sample_images_per_s_median']:.3f}) | "
                     f"{'met' if entry['meets_target'] else 'MISSED'} |")
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']} ({m['cpu_count']} cores, OMP_NUM_THREADS={m['omp_num_threads']}, shared), "
                  f"torch {m['torch']}, diffusers {m['diffusers']}, {m['date']}. Memory: {s['memory']}."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["results"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in zip(axes, ("train_samples_per_s", "sample_images_per_s"),
                              ("training (samples/s)", "sampling with CFG (images/s)")):
        for i, model in enumerate(MODELS):
            values = [report["results"][n][model][key] for n in names]
            ax.bar([j + 0.38 * i for j in range(len(names))], values, width=0.38, label=model)
        ax.set_xticks([j + 0.19 for j in range(len(names))], names)
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle(f"PairedDiT vs diffusers DiTTransformer2DModel, 32x32x4 latents ({report['settings']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--sizes", default="S,B", help="comma-separated DiT sizes (S, B, L, XL)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--sample-batch", type=int, default=4, help="images per sampling run")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per sampling run")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per round (after one warm-up)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return
    report = run(args.sizes.split(","), args.rounds, args.batch, args.sample_batch, args.steps, args.iters)
    from benchmarks.common import write_results

    write_results(report, args.out, "dit", markdown, plot)
    print(markdown(report), end="")


if __name__ == "__main__":
    main()
