"""The correction's variants on held-out photos, beside SDEdit: which one to make the default (issue 16).

Every held-out photo goes through ``api.edit`` as the CLI runs it (the preset's steps, guidance and layer map)
with SDEdit and each correction variant (``released``: the authors' main.py, attention maps only; ``full``: plus
the ResBlock feature, inferred from their notebooks; ``trajectory``: features along a DDIM inversion), at
several strengths and seeds. Scores: SSIM to the source (structure kept) and the preset's CLIP text score for
the prompt (edit achieved), by the same judges for every method.

    python benchmarks/correction_variants.py [--photos /work/tiny-runs/photos] [--n 6] [--out benchmarks/results]
        [--protocol [--clip ID_OR_DIR] [--blip ID_OR_DIR]]

``--protocol`` adds the correction paper's own scores (``dit_translate.protocols``: CLIP ViT-L/14 image similarity,
CLIP text score against "cartoon style of <BLIP caption>", grey SSIM) where those weights load.

Writes correction_variants.json, .md and .png (SSIM against CLIP score, one point per method and strength).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmarks.common import held_out_photos, machine_info, machine_summary, write_results  # noqa: E402
from dit_translate import api  # noqa: E402
from dit_translate.methods.variants import CORRECTION  # noqa: E402
from dit_translate.store import default_store  # noqa: E402

PROMPT = "a comic drawing"
METHODS = ("sdedit", *(f"correct-{v}" for v in CORRECTION))


def run(photos: str | None, n: int, preset: str, strengths: list[float], seeds: list[int],
        protocol: Any = None) -> dict[str, Any]:
    from dit_translate.images import to_pil

    store = default_store()
    rows = []
    for name, image in held_out_photos(photos, n).items():
        for strength in strengths:
            for seed in seeds:
                for method in METHODS:
                    base, _, variant = method.partition("-")
                    request = api.EditRequest(base, PROMPT, strength=strength, seed=seed,
                                              **({"variant": variant} if variant else {}))
                    result = api.edit(request, image, preset=preset, store=store)
                    clip = api.clip_scores([result.image], PROMPT, result.extras["source"], preset=preset, store=store)
                    rows.append({"photo": name, "method": method, "strength": strength, "seed": seed,
                                 "ssim": result.metrics["ssim_to_source"], "clip": clip.text[0],
                                 "nfe": result.nfe, "steps_run": result.extras["steps_run"],
                                 "seconds": round(result.seconds, 3)})
                    if protocol is not None:
                        paper = protocol.score(image, to_pil(result.image), prompt=PROMPT)
                        rows[-1].update({f"paper_{k}": paper[k] for k in ("clip_image", "clip_text", "ssim_gray")})
                    print(f"{name} s={strength} seed={seed} {method}: SSIM {rows[-1]['ssim']:.3f}, "
                          f"CLIP {rows[-1]['clip']:.3f}, {rows[-1]['steps_run']} steps", file=sys.stderr)
    summary = {}
    for strength in strengths:
        for method in METHODS:
            sel = [r for r in rows if r["method"] == method and r["strength"] == strength]
            summary[f"{method}@{strength}"] = {
                "method": method, "strength": strength, "n": len(sel),
                "ssim_mean": statistics.mean(r["ssim"] for r in sel), "ssim_std": statistics.pstdev(r["ssim"] for r in sel),
                "clip_mean": statistics.mean(r["clip"] for r in sel), "clip_std": statistics.pstdev(r["clip"] for r in sel),
                "steps_run": sel[0]["steps_run"], "nfe": sel[0]["nfe"],
                **{f"{k}_mean": statistics.mean(r[k] for r in sel) for k in sel[0] if k.startswith("paper_")},
            }
    return {"benchmark": "correction_variants", "preset": preset, "prompt": PROMPT, "strengths": strengths,
            "seeds": seeds, "photos": sorted({r["photo"] for r in rows}), "machine": machine_info(),
            "rows": rows, "summary": summary}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Correction variants on held-out photos ({report['preset']} preset)", "",
             f"{len(report['photos'])} held-out photos ({', '.join(report['photos'])}), prompt {report['prompt']!r}, "
             f"seeds {report['seeds']}, the preset's steps, guidance and layer map. SSIM to the source (higher keeps "
             "more structure) and the preset's CLIP text score (higher is closer to the prompt), mean +- std.", "",
             "| strength | method | steps run | NFE | SSIM | CLIP |", "|---|---|---|---|---|---|"]
    for s in report["summary"].values():
        lines.append(f"| {s['strength']} | {s['method']} | {s['steps_run']} | {s['nfe']} | "
                     f"{s['ssim_mean']:.3f} +- {s['ssim_std']:.3f} | {s['clip_mean']:.3f} +- {s['clip_std']:.3f} |")
    paper = [s for s in report["summary"].values() if "paper_clip_text_mean" in s]
    if paper:
        lines += ["", "The correction paper's protocol (CLIP ViT-L/14 image similarity to the source, CLIP text score for "
                  "'cartoon style of <BLIP caption>', grey SSIM):", "",
                  "| strength | method | CLIP image | CLIP text | grey SSIM |", "|---|---|---|---|---|"]
        lines += [f"| {s['strength']} | {s['method']} | {s['paper_clip_image_mean']:.4f} | {s['paper_clip_text_mean']:.4f} | "
                  f"{s['paper_ssim_gray_mean']:.3f} |" for s in paper]
    lines += ["", f"Machine: {machine_summary(report['machine'])}", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method in METHODS:
        pts = [s for s in report["summary"].values() if s["method"] == method]
        ax.plot([s["clip_mean"] for s in pts], [s["ssim_mean"] for s in pts], "o-", label=method)
        for s in pts:
            ax.annotate(f"{s['strength']}", (s["clip_mean"], s["ssim_mean"]), fontsize=7)
    ax.set_xlabel(f"CLIP text score for {report['prompt']!r} (edit)")
    ax.set_ylabel("SSIM to the source (structure)")
    ax.set_title("Correction variants vs SDEdit, held-out photos (labels: strength)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=None, help="extracted Debian photos (python -m dit_translate.tiny photos)")
    parser.add_argument("--n", type=int, default=6, help="held-out photos to use")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--strengths", default="0.5,0.7")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--protocol", action="store_true", help="add the correction paper's protocol scores")
    parser.add_argument("--clip", default=None, help="CLIP for the protocol (default openai/clip-vit-large-patch14)")
    parser.add_argument("--blip", default=None, help="BLIP captioner (default Salesforce/blip-image-captioning-large)")
    args = parser.parse_args()
    protocol = None
    if args.protocol:
        from dit_translate.protocols import BLIP_ID, CLIP_ID, load_protocol

        protocol = load_protocol(args.clip or CLIP_ID, args.blip or BLIP_ID)
    report = run(args.photos, args.n, args.preset, [float(s) for s in args.strengths.split(",")],
                 [int(s) for s in args.seeds.split(",")], protocol)
    paths = write_results(report, args.out, "correction_variants", markdown, plot)
    print(markdown(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
