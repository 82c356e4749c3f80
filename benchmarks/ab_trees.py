"""Two checkouts side by side on the same tiny-world workload: CPU seconds and outputs of every method.

    python benchmarks/ab_trees.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 3] [--out benchmarks/results]

Each round runs the workload once per checkout, alternating, each in a fresh process with one thread
(``OMP_NUM_THREADS=1``), so the two share the machine's noise. A method's time is the process CPU time
of one call after a warm-up call (CPU time is less disturbed by other load than wall time); the output's
mean absolute value shows whether the two checkouts compute the same images. Writes ab_trees.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKLOAD = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from dit_translate import api
from dit_translate.store import ModelStore
store, image, out = ModelStore("cpu"), sys.argv[1] + "/assets/examples/chelsea.jpg", {}

def timed(name, run):
    run()  # warm-up: loading, prompt embeddings
    start = time.process_time()
    result = run()
    out[name] = [time.process_time() - start, float(result.image.abs().mean())]

for method in ("sdedit", "correct", "pnp"):
    request = api.EditRequest(method=method, prompt="a comic drawing", strength=0.6, steps=20, seed=0,
                              inversion_steps=20 if method == "pnp" else None)
    timed(method, lambda: api.edit(request, image, preset="tiny", store=store))
timed("agg+ddim", lambda: api.guide(api.GuideRequest(text="a comic drawing", steps=20, seed=0), image,
                                    preset="tiny", store=store))
timed("dit", lambda: api.translate(image, preset="tiny-dit", store=store))
print(json.dumps(out))
'''


def run(tree: Path) -> dict[str, list[float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", WORKLOAD, str(tree)], env=env, cwd="/", capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(args.rounds):
        for name in ("old", "new"):
            print(f"round {i + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            runs[name].append(run(getattr(args, name)))
    rows = []
    for method in runs["old"][0]:
        old = statistics.median(r[method][0] for r in runs["old"])
        new = statistics.median(r[method][0] for r in runs["new"])
        same = abs(runs["old"][0][method][1] - runs["new"][0][method][1])
        rows.append({"method": method, "old_cpu_s": old, "new_cpu_s": new, "ratio": new / old,
                     "old_cpu_s_runs": [r[method][0] for r in runs["old"]],
                     "new_cpu_s_runs": [r[method][0] for r in runs["new"]], "output_mean_abs_diff": same})
    report = {"old": str(args.old), "new": str(args.new), "rounds": args.rounds, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ab_trees.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# {args.old} vs {args.new}: CPU seconds per call (median of {args.rounds}, one thread)", "",
             "| method | old | new | new/old | runs old | runs new | output |mean| difference |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['old_cpu_s']:.3f} | {r['new_cpu_s']:.3f} | {r['ratio']:.3f} | "
                     f"{', '.join(f'{v:.2f}' for v in r['old_cpu_s_runs'])} | "
                     f"{', '.join(f'{v:.2f}' for v in r['new_cpu_s_runs'])} | {r['output_mean_abs_diff']:.1e} |")
    (args.out / "ab_trees.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
