"""The tiny world's held-out measurements: VAE PSNR, CLIP style retrieval, the DiT against SDEdit and the
photo, the correction against SDEdit, AGG against DDIM, and the two-core training schedule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from dit_translate.tiny.data import (
    PHOTOS,
    STYLES,
    TinyDataset,
    caption,
    load_photos,
    resize,
    style_caption,
)


def example_inputs(size: int = 64) -> dict[str, np.ndarray]:
    """Centre-square crops of the held-out photos, uint8 (size,size,3), keyed by content words."""
    out = {}
    for name, img in load_photos("test").items():
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        out[PHOTOS[name]] = resize(img[top : top + side, left : left + side], size)
    return out


@torch.no_grad()


def vae_psnr(vae: AutoencoderKL, size: int = 64, crops_per_photo: int = 16, seed: int = 1) -> dict[str, float]:
    """Mean PSNR (dB, images in [0,255]) of deterministic (posterior-mean) reconstructions of
    random crops of the held-out photos, per style; keys are the style names."""
    data = TinyDataset("test", size, crops_per_photo, seed=seed)
    styles = np.array(data.styles)
    x = data.images.float() / 127.5 - 1.0
    recon = torch.cat([vae.decode(vae.encode(c).latent_dist.mean).sample for c in x.split(64)])
    mse = ((recon.clamp(-1, 1) - x) * 127.5).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    return {s: float(psnr[torch.from_numpy(styles == s)].mean()) for s in STYLES}


@torch.no_grad()


def style_retrieval(clip, size: int = 64, crops_per_photo: int = 16, seed: int = 1) -> dict[str, float]:
    """Top-1 accuracy of image -> style caption retrieval on crops of the held-out photos.

    ``clip`` is an ``encoders.ClipEncoder``. Keys: ``"style_only"`` (queries "a comic drawing", ...),
    ``"with_content"`` (queries "a comic drawing of a cat", ... with the photo's own content words,
    which never occur in training), and per-style accuracies of the style-only queries.
    """
    data = TinyDataset("test", size, crops_per_photo, seed=seed)
    truth = torch.tensor([STYLES.index(s) for s in data.styles])
    images = clip.embed_image(data.images.float() / 127.5 - 1.0)
    pred_style = (images @ clip.embed_text([style_caption(s) for s in STYLES]).T).argmax(1)
    hits = pred_style == truth
    out = {"style_only": float(hits.float().mean())}
    content_hits = []
    for name in dict.fromkeys(data.photo_names):
        rows = torch.tensor([n == name for n in data.photo_names])
        queries = clip.embed_text([caption(s, PHOTOS[name]) for s in STYLES])
        content_hits.append((images[rows] @ queries.T).argmax(1) == truth[rows])
    out["with_content"] = float(torch.cat(content_hits).float().mean())
    out.update({s: float(hits[truth == i].float().mean()) for i, s in enumerate(STYLES)})
    return out


def heldout_pairs(crops_per_photo: int = 12, seed: int = 1, style: str = "comic", size: int = 64,
                  split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(photos, renderings) of random crops of the held-out photos (``split="train"``: of the training
    photos, for the generalisation gap): two (N,3,size,size) tensors in [-1,1].

    With the defaults these are exactly the ``test/`` pairs of ``data.write_pairs``.
    """
    data = TinyDataset(split, size, crops_per_photo, styles=("photo", style), seed=seed)
    x = data.images.float() / 127.5 - 1.0
    return x[0::2], x[1::2]


def dit_vs_sdedit(folder: str | Path, sd: str | Path, sources: torch.Tensor, targets: torch.Tensor,
                  prompt: str = "a comic drawing", strength: float = 0.6, seed: int = 0
                  ) -> tuple[dict[str, dict[str, float]], torch.Tensor, torch.Tensor]:
    """Mean PSNR/SSIM to ``targets`` of: the untranslated ``sources``, SDEdit on the tiny SD folder ``sd``
    (``prompt``, ``strength``, the tiny preset's steps/guidance; seed ``seed + i`` for image i) and the
    DiT checkpoint ``folder`` (its default steps/guidance, one generator seeded ``seed``).

    Returns ``({"photo"|"sdedit"|"dit": {"psnr", "ssim"}}, sdedit outputs, dit outputs)``; images in [-1,1].
    """
    from dit_translate.diffusion.models import DiffusionModels
    from dit_translate.methods.sdedit import sdedit
    from dit_translate.metrics import psnr, ssim
    from dit_translate.paired.loading import load_paired
    from dit_translate.paired.sampling import translate_batch
    from dit_translate.presets import load_preset

    models = load_paired(folder)
    defaults = load_preset("tiny").defaults
    sd_models = DiffusionModels.from_pipeline_folder(sd, device=torch.device("cpu"), dtype=torch.float32)
    edited = torch.cat([sdedit(sd_models, src[None], prompt, strength=strength, steps=defaults.steps,
                               guidance=defaults.guidance, seed=seed + i).image.cpu() for i, src in enumerate(sources)])
    translated = translate_batch(models, sources, steps=int(models.defaults.get("steps", 25)),
                                 guidance=float(models.defaults.get("guidance", 2.0)),
                                 generator=torch.Generator().manual_seed(seed)).cpu()
    scores = {name: {"psnr": float(np.mean([psnr(o, t) for o, t in zip(out, targets)])),
                     "ssim": float(np.mean([ssim(o, t) for o, t in zip(out, targets)]))}
              for name, out in (("photo", sources), ("sdedit", edited), ("dit", translated))}
    return scores, edited, translated


def beats(scores: dict[str, dict[str, float]], a: str, b: str) -> bool:
    """Whether output ``a`` is closer to the target than ``b`` in both PSNR and SSIM (``dit_vs_sdedit`` scores)."""
    return scores[a]["psnr"] > scores[b]["psnr"] and scores[a]["ssim"] > scores[b]["ssim"]


def dit_bar_met(scores: dict[str, dict[str, float]]) -> bool:
    """The tiny DiT's quality bar: closer to the comic target than the untranslated photo and than SDEdit."""
    return beats(scores, "dit", "photo") and beats(scores, "dit", "sdedit")


def _mean_scores(results: list, clip, text: str) -> dict[str, float]:
    """Mean SSIM to the source (``metrics["ssim_to_source"]``) and mean ``metrics.clip_text_score`` to ``text``
    under ``clip`` of some ``TranslationResult``s."""
    from dit_translate.metrics import clip_text_score

    images = torch.cat([r.image for r in results]).to(clip.device)
    return {"ssim": float(np.mean([r.metrics["ssim_to_source"] for r in results])),
            "clip": float(np.mean(clip_text_score(images, text, clip)))}


def _photo_images(store, preset: str) -> list[Image.Image]:
    """The held-out photos' centre crops at ``preset``'s working size."""
    return [Image.fromarray(img) for img in example_inputs(store.get(preset).preset.size).values()]


def editing_comparison(store=None, prompt: str = "a comic drawing", strengths: tuple[float, ...] = (0.5, 0.7),
                       seeds: tuple[int, ...] = (0, 1, 2), preset: str = "tiny") -> dict[str, dict[str, dict[str, float]]]:
    """SDEdit vs the released correction on the held-out photos (centre crops at the preset's working size,
    with its layer map), per strength: mean SSIM
    to the source and mean CLIP score to ``prompt`` under the preset's first guidance CLIP, over ``seeds``.

    Returns ``{"0.5": {"sdedit": {"ssim", "clip"}, "correct": {...}}, ...}``.
    """
    from dit_translate.api import EditRequest, edit
    from dit_translate.store import default_store

    store = store or default_store()
    clip = store.guidance(preset).clips()[0]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for strength in strengths:
        row = {}
        for method in ("sdedit", "correct"):
            results = [edit(EditRequest(method, prompt, strength=strength, seed=seed), photo, preset=preset, store=store)
                       for photo in _photo_images(store, preset) for seed in seeds]
            row[method] = _mean_scores(results, clip, prompt)
        out[f"{strength:g}"] = row
    return out


def agg_comparison(store=None, text: str = "a comic drawing", seeds: tuple[int, ...] = (0, 1, 2),
                   preset: str = "tiny") -> dict[str, dict[str, float]]:
    """Text-guided AGG vs unguided DDIM (same seed, same windows) on the held-out photos: mean SSIM to the
    source and mean CLIP score to ``text`` under the preset's first guidance CLIP. ``{"agg"|"ddim": {...}}``."""
    from dit_translate.api import GuideRequest, guide
    from dit_translate.store import default_store

    store = store or default_store()
    clip = store.guidance(preset).clips()[0]
    results = [guide(GuideRequest(text=text, seed=seed), photo, preset=preset, store=store)
               for photo in _photo_images(store, preset) for seed in seeds]
    return {"agg": _mean_scores(results, clip, text), "ddim": _mean_scores([r.extras["ddim"] for r in results], clip, text)}


def training_hours(root: str | Path) -> dict[str, float]:
    """Training seconds per stage of the shipped tiny world (read from the cards' ``eval.json``) and the
    two-core schedule's length under ``"two_cores"``: ``max(vae, clip)``, then the U-Net beside the DiT with the
    decoder fine-tune (which only needs the VAE) after whichever of the two makes the schedule shorter."""
    root = Path(root)
    sd, clip, dit = (json.loads((root / name / "eval.json").read_text()) for name in ("sd", "clip", "dit"))
    t = {"vae": float(sd["vae_last"]["seconds"]), "decoder": float(sd.get("decoder_last", {}).get("seconds", 0.0)),
         "unet": float(sd["sd_last"]["seconds"]), "clip": float(clip["last"]["seconds"]),
         "dit": float(dit["last"]["seconds"])}
    second = min(max(t["unet"] + t["decoder"], t["dit"]), max(t["unet"], t["dit"] + t["decoder"]))
    return {**t, "two_cores": max(t["vae"], t["clip"]) + second}
