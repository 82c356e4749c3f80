"""AGG's variants on held-out photos: which one to make the default (issue 16).

For every held-out photo, both variants (``released``: the official code's behaviour; ``paper``: the paper's text)
run through ``api.guide`` exactly as the CLI does (AGG's own 100-step grid), text-guided towards each target
text and image-guided towards a stylised other held-out photo. Every output is scored by the SAME judges,
whatever the variant's own loss: the preset's CLIP text score for the target text (``api.clip_scores``), the
cosine of DINO [CLS] (after the final norm) to the style image, and SSIM to the source; each AGG result is shown
next to the variant's own unguided DDIM baseline (same seed, same inversion and windows).

    python benchmarks/agg_variants.py [--photos /work/tiny-runs/photos] [--n 6] [--out benchmarks/results]

Writes agg_variants.json, .md and .png (mean gain over DDIM per variant with one standard deviation).

``--scale-only`` measures the MCG step's scale rule instead (``agg_mcg_scale.{json,md,png}``): MCG-only AGG
(``refine="none"``, the paper variant otherwise) with the default scale ``numel(decoded image) / 3*256*256`` against
the earlier ``numel(latent) / 3*256*256``, text-guided towards "a comic drawing": how far each moves the result
from DDIM (mean |AGG - DDIM| in pixels) and the CLIP text score gained.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import held_out_photos, machine_info, machine_summary, write_results  # noqa: E402
from dit_translate import api, images, sizes  # noqa: E402
from dit_translate.methods.variants import AGG  # noqa: E402
from dit_translate.store import default_store  # noqa: E402
from dit_translate.tiny.data import stylize  # noqa: E402

TEXTS = ("a comic drawing", "a pencil sketch")
STYLE = "watercolor"


def dino_cosine(dino, a: torch.Tensor, b: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cosine_similarity(dino.cls_token(a), dino.cls_token(b)).mean())


def run(photos: str | None, n: int, preset: str, seed: int) -> dict[str, Any]:
    store = default_store()
    dino = store.guidance(preset).dino()
    pool = held_out_photos(photos, n)
    names = list(pool)
    rows = []
    for i, name in enumerate(names):
        style_src = pool[names[(i + 1) % len(names)]]
        style = Image.fromarray(stylize(np.asarray(style_src.convert("RGB")), STYLE))
        for variant in AGG:
            for target in (*TEXTS, "image"):
                request = (api.GuideRequest(style_image=style, seed=seed, variant=variant) if target == "image"
                           else api.GuideRequest(text=target, seed=seed, variant=variant))
                start = time.perf_counter()
                result = api.guide(request, pool[name], preset=preset, store=store)
                seconds = time.perf_counter() - start
                ddim, source = result.extras["ddim"], result.extras["source"]
                row = {"photo": name, "variant": variant, "target": target, "seconds": round(seconds, 2),
                       "nfe": result.nfe, "edit_steps": result.extras["edit_steps"],
                       "ssim_agg": result.metrics["ssim_to_source"], "ssim_ddim": result.metrics["ssim_to_source_ddim"]}
                if target == "image":
                    h, w = source.shape[-2:]
                    style_t = images.to_tensor(sizes.resize_to(style, (w, h))).to(dino.device)
                    row["score_agg"] = dino_cosine(dino, result.image.clamp(-1, 1).to(dino.device), style_t)
                    row["score_ddim"] = dino_cosine(dino, ddim.image.clamp(-1, 1).to(dino.device), style_t)
                else:
                    clip = api.clip_scores([ddim.image, result.image], target, source, preset=preset, store=store)
                    row["score_ddim"], row["score_agg"] = clip.text
                rows.append(row)
                print(f"{name} {variant} {target}: score {row['score_ddim']:.3f} -> {row['score_agg']:.3f}, "
                      f"SSIM {row['ssim_ddim']:.3f} -> {row['ssim_agg']:.3f}, {seconds:.1f} s", file=sys.stderr)
    return {"benchmark": "agg_variants", "preset": preset, "seed": seed, "photos": names, "texts": list(TEXTS),
            "style": STYLE, "machine": machine_info(), "rows": rows, "summary": summarise(rows)}


def run_scale(photos: str | None, n: int, preset: str, seed: int) -> dict[str, Any]:
    """MCG-only AGG under the two scale rules (see the module docstring)."""
    from dit_translate.methods.agg import REFERENCE_NUMEL

    store = default_store()
    loaded = store.get(preset)
    rows = []
    for name, image in held_out_photos(photos, n).items():
        for rule in ("image", "latent"):
            options = {"refine": "none"}
            if rule == "latent":
                source = api.prepare_source(image.convert("RGB"), loaded)
                with torch.no_grad():
                    latent = loaded.models.encode(source.to(loaded.models.device))
                options["mcg_scale"] = latent[0].numel() / REFERENCE_NUMEL
            result = api.guide(api.GuideRequest(text=TEXTS[0], seed=seed, variant="paper"), image, preset=preset,
                               store=store, options=options)
            ddim, source = result.extras["ddim"], result.extras["source"]
            clip = api.clip_scores([ddim.image, result.image], TEXTS[0], source, preset=preset, store=store)
            rows.append({"photo": name, "rule": rule, "moved": float((result.image - ddim.image).abs().mean()),
                         "score_gain": clip.text[1] - clip.text[0], "ssim_agg": result.metrics["ssim_to_source"]})
            print(f"{name} {rule}: moved {rows[-1]['moved']:.4f}, CLIP gain {rows[-1]['score_gain']:+.4f}",
                  file=sys.stderr)
    summary = {rule: {k: statistics.mean(r[k] for r in rows if r["rule"] == rule) for k in ("moved", "score_gain", "ssim_agg")}
               for rule in ("image", "latent")}
    return {"benchmark": "agg_mcg_scale", "preset": preset, "seed": seed, "text": TEXTS[0],
            "photos": sorted({r["photo"] for r in rows}), "machine": machine_info(), "rows": rows, "summary": summary}


def scale_markdown(report: dict[str, Any]) -> str:
    lines = [f"# AGG's MCG scale rule, MCG step only ({report['preset']} preset)", "",
             f"{len(report['photos'])} held-out photos, {report['text']!r}, seed {report['seed']}, refinement off.", "",
             "| scale rule | mean abs(AGG - DDIM) | CLIP text gain | SSIM to source |", "|---|---|---|---|"]
    for rule, s in report["summary"].items():
        label = "numel(decoded image) / 196608 (default)" if rule == "image" else "numel(latent) / 196608 (before)"
        lines.append(f"| {label} | {s['moved']:.4f} | {s['score_gain']:+.4f} | {s['ssim_agg']:.3f} |")
    lines += ["", f"Machine: {machine_summary(report['machine'])}", ""]
    return "\n".join(lines)


def scale_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    rules = list(report["summary"])
    for ax, key, label in zip(axes, ("moved", "score_gain"), ("mean |AGG - DDIM|", "CLIP text gain")):
        ax.bar(rules, [report["summary"][r][key] for r in rules], color=["#4c72b0", "#dd8452"])
        ax.set_title(f"MCG only: {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant and mode (text / image): mean and std of the score gain over DDIM and of SSIM to the source."""
    out: dict[str, dict[str, Any]] = {}
    for variant in AGG:
        for mode in ("text", "image"):
            sel = [r for r in rows if r["variant"] == variant and (r["target"] == "image") == (mode == "image")]
            if not sel:
                continue
            gain = [r["score_agg"] - r["score_ddim"] for r in sel]
            out[f"{variant}/{mode}"] = {
                "n": len(sel),
                "score_gain_mean": statistics.mean(gain), "score_gain_std": statistics.pstdev(gain),
                "score_agg_mean": statistics.mean(r["score_agg"] for r in sel),
                "ssim_agg_mean": statistics.mean(r["ssim_agg"] for r in sel),
                "ssim_ddim_mean": statistics.mean(r["ssim_ddim"] for r in sel),
                "seconds_mean": statistics.mean(r["seconds"] for r in sel),
            }
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# AGG variants on held-out photos ({report['preset']} preset)", "",
             f"{len(report['photos'])} held-out photos ({', '.join(report['photos'])}), seed {report['seed']}; text "
             f"targets {', '.join(repr(t) for t in report['texts'])} (score: the preset's CLIP text score) and a "
             f"{report['style']} rendering of another held-out photo as style image (score: DINO [CLS] cosine to it). "
             "Gains are AGG minus the same variant's unguided DDIM baseline.", "",
             "| variant / mode | n | score gain over DDIM (mean +- std) | AGG score | SSIM AGG | SSIM DDIM | s / run |",
             "|---|---|---|---|---|---|---|"]
    for key, s in report["summary"].items():
        lines.append(f"| {key} | {s['n']} | {s['score_gain_mean']:+.4f} +- {s['score_gain_std']:.4f} | "
                     f"{s['score_agg_mean']:.4f} | {s['ssim_agg_mean']:.3f} | {s['ssim_ddim_mean']:.3f} | "
                     f"{s['seconds_mean']:.1f} |")
    lines += ["", f"Machine: {machine_summary(report['machine'])}", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, mode, label in zip(axes, ("text", "image"), ("CLIP text score gain", "DINO [CLS] cosine gain")):
        keys = [k for k in report["summary"] if k.endswith(f"/{mode}")]
        means = [report["summary"][k]["score_gain_mean"] for k in keys]
        stds = [report["summary"][k]["score_gain_std"] for k in keys]
        ax.bar([k.split("/")[0] for k in keys], means, yerr=stds, capsize=4, color=["#4c72b0", "#dd8452"][: len(keys)])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"{mode}-guided: {label} over DDIM")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=None, help="extracted Debian photos (python -m dit_translate.tiny photos)")
    parser.add_argument("--n", type=int, default=6, help="held-out photos to use")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--scale-only", action="store_true", help="measure the MCG scale rules instead")
    args = parser.parse_args()
    if args.scale_only:
        report = run_scale(args.photos, args.n, args.preset, args.seed)
        paths = write_results(report, args.out, "agg_mcg_scale", scale_markdown, scale_plot)
        print(scale_markdown(report))
        print(f"wrote {', '.join(str(p) for p in paths.values())}")
        return
    report = run(args.photos, args.n, args.preset, args.seed)
    paths = write_results(report, args.out, "agg_variants", markdown, plot)
    print(markdown(report))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
