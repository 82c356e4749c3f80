"""DiT training step with and without the latent cache (``[train] cache_latents``), on the tiny world.

    python benchmarks/train_cache.py [--data DIR] [--out benchmarks/results] [--steps 20] [--rounds 3]

Setting: the ``tiny-dit`` preset's recipe (its VAE, CLIP, DiT, batch size and loss) on the tiny
world's training pairs (``--data``, else written to a temporary folder by ``tiny.data.write_pairs``
with 32 crops per photo: the per-step cost does not depend on the number of pairs). Each round runs
``--steps`` optimizer steps with the cache, then as many without it, on the same batches (the
sampler's); rounds alternate the order. Reported per mode: the median seconds per step (wall and
this process's CPU time; one torch thread) and, for the cache, the one-off seconds it takes to
build per pair. Writes train_cache.json, train_cache.md and train_cache.png.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from benchmarks.common import machine_info, machine_summary, write_results  # noqa: E402

MODES = ("cached", "encoded")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(data: Path, steps: int, rounds: int) -> dict[str, Any]:
    from accelerate import Accelerator
    from torch.utils.data import default_collate

    from dit_translate.paired.data import PairedDataset, PairSampler
    from dit_translate.paired.train import DiTRecipe
    from dit_translate.presets import load_preset
    from dit_translate.runtime import step_generator

    preset = load_preset("tiny-dit")
    t = preset.paired.train
    recipe = DiTRecipe(Accelerator(cpu=True), preset.paired, preset)
    dataset = PairedDataset(data, preset.paired.data, preset.size, "train")
    started = time.perf_counter()
    recipe.prepare(dataset, progress=False)
    build = time.perf_counter() - started
    cache = recipe.latents
    sampler = PairSampler(len(dataset), t.batch_size, t.seed)
    batches = [default_collate([dataset[item] for item in sampler.batch_at(k)]) for k in range(steps)]
    times: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in MODES}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            recipe.latents = cache if mode == "cached" else None
            for i, batch in enumerate(batches):
                wall, cpu = time.perf_counter(), _cpu()
                recipe.update([batch], step_generator(t.seed, i, 0))
                times[mode]["wall"].append(time.perf_counter() - wall)
                times[mode]["cpu"].append(_cpu() - cpu)
    med = {m: {k: statistics.median(v) for k, v in times[m].items()} for m in MODES}
    return {
        "machine": machine_info(), "preset": preset.name, "pairs": len(dataset), "batch_size": t.batch_size,
        "steps_per_round": steps, "rounds": rounds, "cache_build_s": build, "cache_build_s_per_pair": build / len(dataset),
        "median_step_s": med, "speedup_wall": med["encoded"]["wall"] / med["cached"]["wall"],
        "speedup_cpu": med["encoded"]["cpu"] / med["cached"]["cpu"], "samples": times,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["median_step_s"]
    rows = "\n".join(f"| {mode} | {m[mode]['wall']:.3f} | {m[mode]['cpu']:.3f} |" for mode in MODES)
    return f"""# DiT training step: latent cache vs encoding every step

{machine_summary(report["machine"])}

Preset `{report["preset"]}`, batch {report["batch_size"]}, {report["pairs"]} training pairs,
{report["rounds"]} rounds x {report["steps_per_round"]} steps per mode (interleaved), one torch thread.

| mode | median s/step (wall) | median s/step (CPU) |
|---|---|---|
{rows}

Speed-up of the cache: **{report["speedup_wall"]:.2f}x** wall, {report["speedup_cpu"]:.2f}x CPU. Building the
cache took {report["cache_build_s"]:.1f} s ({1000 * report["cache_build_s_per_pair"]:.1f} ms per pair), once per run.
"""


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = [f"{m}\n(median {report['median_step_s'][m]['wall']:.3f} s)" for m in MODES]
    ax.boxplot([report["samples"][m]["wall"] for m in MODES], tick_labels=labels, orientation="horizontal")
    ax.set_xlabel("seconds per training step (wall)")
    ax.set_title(f"tiny-dit training step: cache speed-up {report['speedup_wall']:.2f}x")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from dit_translate.tiny.data import write_pairs

            data = write_pairs(Path(tmp) / "pairs", crops_per_photo=32)
        report = run(data, args.steps, args.rounds)
    paths = write_results(report, args.out, "train_cache", markdown, plot)
    print(markdown(report))
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
