"""Measure the tiny DINO: crop retrieval, key self-similarity structure, and its effect on image-guided AGG.

Features are what the project uses: ``encoders.DinoEncoder.cls_token`` ([CLS] after the final norm)
and the keys of the last block's attention (AGG's / Splice's structure descriptor: the cosine
self-similarity of the patch tokens' keys). Images are float (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dit_translate.encoders import DinoEncoder, fit_square, normalize
from dit_translate.guidance import load_dino
from dit_translate.presets import Preset, load_preset
from dit_translate.refs import LOCAL_DIR
from dit_translate.tiny.data import HELD_OUT, TinyDataset, load_photos, render, resize
from dit_translate.tiny.multicrop import colour_jitter, gaussian_blur, grey
from dit_translate.untrained import build_random_dino

Features = Callable[[torch.Tensor], torch.Tensor]
RETRIEVAL_CROPS = 32
"""New random crops per photo in the retrieval gallery (all sixteen photos)."""
STYLE_PHOTO, STYLE = "astronaut", "comic"
"""The style image of the AGG comparison: a training photo rendered by the comic filter."""


def load_folder(folder: str | Path) -> DinoEncoder:
    """A DINO ``local-dir`` folder loaded exactly as the tiny preset loads its DINO."""
    enc, _ = load_dino(f"{LOCAL_DIR}{folder}", load_preset("tiny"))
    return enc


def untrained_folders(root: str | Path, shipped_args: dict) -> dict[str, Path]:
    """The untrained baselines under ``root``: the preset's random fallback (``TINY_DINO_ARGS``) and a random
    init of the shipped architecture (``shipped_args``)."""
    root = Path(root)
    return {"untrained fallback": build_random_dino(root / "fallback"),
            "untrained, same architecture": build_random_dino(root / "same-arch", model_args=shipped_args)}


# ---- retrieval -------------------------------------------------------------------------------------
def retrieval_crops(size: int = 64, crops_per_photo: int = RETRIEVAL_CROPS, seed: int = 1) -> tuple[torch.Tensor, list[str]]:
    """New random crops (30-100% of the short side, flips; ``data.random_crop``) of all sixteen photos,
    training and held-out: images (N, 3, size, size) in [-1, 1] and the photo name of each."""
    data = TinyDataset("all", size, crops_per_photo, styles=("photo",), seed=seed)
    return data.images.float() / 127.5 - 1.0, data.photo_names


def mean_colour(images: torch.Tensor) -> torch.Tensor:
    """Trivial baseline: the mean colour (N, 3)."""
    return images.mean((2, 3))


def thumbnail(images: torch.Tensor) -> torch.Tensor:
    """Trivial baseline: the 4x4 average-pooled image (N, 48)."""
    return F.adaptive_avg_pool2d(images, 4).flatten(1)


def top1_same_photo(features: torch.Tensor, names: list[str], centre: bool = False) -> dict[str, float]:
    """Is each crop's nearest other crop (cosine of ``features`` (N, D); ``centre`` subtracts their mean
    first) a crop of the same photo? Top-1 rate over the held-out photos' crops and the training photos'."""
    f = features - features.mean(0) if centre else features
    f = F.normalize(f.float(), dim=-1)
    sim = f @ f.T
    sim.fill_diagonal_(-float("inf"))
    nearest = sim.argmax(1).tolist()
    hits = np.array([names[j] == names[i] for i, j in enumerate(nearest)])
    held = np.array([n in HELD_OUT for n in names])
    return {"held_out": float(hits[held].mean()), "train": float(hits[~held].mean())}


def photometric(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """DINO's photometric augmentations of crops in [-1, 1]: colour jitter (p 0.8), then greyscale (p 0.2)."""
    x = colour_jitter((images + 1) / 2, g)
    x = torch.where((torch.rand(len(x), generator=g) < 0.2).view(-1, 1, 1, 1), grey(x).expand_as(x), x)
    return x * 2 - 1


@torch.no_grad()
def retrieval(encoders: Mapping[str, DinoEncoder], crops_per_photo: int = RETRIEVAL_CROPS,
              seed: int = 1) -> dict[str, dict[str, dict[str, float]]]:
    """``top1_same_photo`` for each DINO's [CLS] and for the mean-colour and thumbnail baselines (centred),
    on the plain crops (``"plain"``) and on the crops after ``photometric`` (``"jittered"``)."""
    plain, names = retrieval_crops(crops_per_photo=crops_per_photo, seed=seed)
    features: dict[str, tuple[Features, bool]] = {name: (enc.cls_token, False) for name, enc in encoders.items()}
    features.update({"mean colour": (mean_colour, True), "4x4 thumbnail": (thumbnail, True)})
    sets = {"plain": plain, "jittered": photometric(plain, torch.Generator().manual_seed(seed))}
    return {name: {k: top1_same_photo(fn(x), names, centre) for k, x in sets.items()}
            for name, (fn, centre) in features.items()}


# ---- key self-similarity -----------------------------------------------------------------------
def last_keys(dino: DinoEncoder, images: torch.Tensor) -> torch.Tensor:
    """Keys of the patch tokens in the last block's attention: (B, N_patches, D), all heads concatenated."""
    attn = dino.model.blocks[-1].attn
    seen: dict[str, torch.Tensor] = {}
    hook = attn.qkv.register_forward_hook(lambda _m, _i, out: seen.setdefault("qkv", out))
    try:
        dino.model.forward_features(normalize(fit_square(images.float(), dino.size), dino.mean, dino.std))
    finally:
        hook.remove()
    qkv = seen["qkv"]
    b, n, _ = qkv.shape
    keys = attn.k_norm(qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim)[:, :, 1].transpose(1, 2))
    return keys.transpose(1, 2).reshape(b, n, -1)[:, dino.model.num_prefix_tokens:]


def self_similarity(keys: torch.Tensor) -> torch.Tensor:
    """Cosine self-similarity (B, N, N) of token descriptors (B, N, D), values in [-1, 1]."""
    k = F.normalize(keys, dim=-1)
    return k @ k.transpose(1, 2)


def patch_pixels(images: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """Trivial baseline descriptor: each 8x8 patch's pixels minus the image mean, (B, N, 3*patch*patch)."""
    x = images - images.mean((2, 3), keepdim=True)
    return F.unfold(x, patch, stride=patch).transpose(1, 2)


def mild_augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Geometry-preserving changes (patches stay aligned): weak colour jitter, slight blur, pixel noise."""
    x = colour_jitter((images + 1) / 2, g, p=1.0, brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02)
    x = gaussian_blur(x, 0.3 + 0.4 * torch.rand(len(x), generator=g))
    x = x + 0.02 * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1) * 2 - 1


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Correlation (B,) of the off-diagonal entries of matrices a, b (B, N, N)."""
    off = ~torch.eye(a.shape[-1], dtype=torch.bool)
    x, y = a[:, off], b[:, off]
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)


def structure_scores(descriptor: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     augmented: torch.Tensor) -> dict[str, float]:
    """Key self-similarity structure of one descriptor: mean correlation of an image's self-similarity matrix
    with its mildly augmented copy's (``same``) and with another crop's (``other``: the next image), their
    difference (``contrast``), and AGG's structure distance (MSE of the matrices) to the augmented copy."""
    a, b = self_similarity(descriptor(images)), self_similarity(descriptor(augmented))
    other = a.roll(1, 0)
    same, diff = _pearson(a, b).mean(), _pearson(a, other).mean()
    return {"same": float(same), "other": float(diff), "contrast": float(same - diff),
            "distance": float((a - b).pow(2).mean())}


@torch.no_grad()
def key_structure(encoders: Mapping[str, DinoEncoder], crops_per_photo: int = 16, seed: int = 2) -> dict[str, dict[str, float]]:
    """``structure_scores`` on new crops of the held-out photos for each DINO's last-layer keys and for the
    patch-pixel baseline."""
    data = TinyDataset("test", 64, crops_per_photo, styles=("photo",), seed=seed)
    images = data.images.float() / 127.5 - 1.0
    augmented = mild_augment(images, torch.Generator().manual_seed(seed))
    out = {name: structure_scores(lambda x, e=enc: last_keys(e, x), images, augmented) for name, enc in encoders.items()}
    out["patch pixels"] = structure_scores(patch_pixels, images, augmented)
    return out


# ---- image-guided AGG ----------------------------------------------------------------------------
def style_image(size: int = 96) -> Image.Image:
    """The style image: the centre square of ``STYLE_PHOTO`` (a training photo) rendered by the ``STYLE`` filter."""
    img = load_photos("train")[STYLE_PHOTO]
    h, w = img.shape[:2]
    s = min(h, w)
    crop = resize(img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s], size)
    return Image.fromarray(render(crop, STYLE))


def with_dino(preset: Preset, folder: str | Path) -> Preset:
    """``preset`` with its guidance DINO pointed at ``folder``."""
    return replace(preset, guidance=replace(preset.guidance, dino=f"{LOCAL_DIR}{folder}"))


@torch.no_grad()
def guided_scores(image: torch.Tensor, source: torch.Tensor, style: torch.Tensor, judge: DinoEncoder,
                  clip) -> dict[str, float]:
    """Scores of one (1, 3, H, W) result: SSIM and the judge DINO's key structure distance to ``source``,
    cosine of the judge's [CLS] and of the tiny CLIP's embedding to ``style``."""
    from dit_translate import metrics

    image = image.clamp(-1, 1)
    keys = [self_similarity(last_keys(judge, x)) for x in (image, source)]
    cls = F.cosine_similarity(judge.cls_token(image), judge.cls_token(style)).item()
    return {"ssim_to_source": metrics.ssim(image, source), "structure_distance": float((keys[0] - keys[1]).pow(2).mean()),
            "dino_cls_to_style": cls, "clip_to_style": metrics.clip_image_similarity(image, style, clip.embed_image)}


def agg_effect(dinos: Mapping[str, str | Path], photos: Mapping[str, str | Path], judge: DinoEncoder,
               seeds: tuple[int, ...] = (0, 1), steps: int | None = 50,
               ) -> tuple[dict[str, dict[str, dict[str, float]]], list[list[torch.Tensor]]]:
    """Image-guided AGG (``api.guide`` with the ``style_image``) on each photo with each DINO folder of
    ``dinos`` (the rest of the tiny preset unchanged) and the unguided DDIM baseline of the same seeds.

    Returns ``{photo: {"ddim" | dino name: guided_scores means over seeds}}`` (the judge is ``judge``)
    and, per photo, the images of the first seed: source, style, DDIM, then one per DINO, each (3, H, W).
    """
    from dit_translate import images
    from dit_translate.api import GuideRequest, guide
    from dit_translate.store import ModelStore

    base = load_preset("tiny")
    style_img = style_image(base.size)
    out: dict[str, dict[str, dict[str, float]]] = {}
    grid: list[list[torch.Tensor]] = []
    for photo_name, path in photos.items():
        rows: dict[str, list[dict[str, float]]] = {}
        tiles: list[torch.Tensor] = []
        for dino_name, folder in dinos.items():
            preset, store = with_dino(base, folder), ModelStore()
            clip = store.guidance(preset).clips()[0]
            for seed in seeds:
                r = guide(GuideRequest(style_image=style_img, steps=steps, seed=seed), images.load_image(path),
                          preset=preset, store=store)
                source = r.extras["source"]
                h, w = source.shape[-2:]
                style = images.to_tensor(images.resize_to(style_img, (w, h)))
                rows.setdefault(dino_name, []).append(guided_scores(r.image, source, style, judge, clip))
                first_dino, first_seed = dino_name == next(iter(dinos)), seed == seeds[0]
                if first_dino:
                    rows.setdefault("ddim", []).append(guided_scores(r.extras["ddim"].image, source, style, judge, clip))
                if first_seed:
                    tiles += [source[0], style[0], r.extras["ddim"].image[0]] if first_dino else []
                    tiles.append(r.image[0].clamp(-1, 1))
        order = ["ddim", *dinos]
        out[photo_name] = {k: {m: float(np.mean([s[m] for s in rows[k]])) for m in rows[k][0]} for k in order}
        grid.append(tiles)
    return out, grid


def measure(folder: str | Path, agg_seeds: tuple[int, ...] = (0, 1), agg_steps: int = 50,
            ) -> tuple[dict, list[list[torch.Tensor]]]:
    """Every figure of the DINO card for the shipped ``folder``, against the untrained baselines, and the
    image rows of the AGG comparison (``agg_effect``)."""
    import json

    shipped_args = json.loads((Path(folder) / "config.json").read_text())["model_args"]
    trained = load_folder(folder)
    examples = Path(__file__).resolve().parents[2] / "assets" / "examples"
    with tempfile.TemporaryDirectory() as tmp:
        baselines = untrained_folders(tmp, shipped_args)
        encoders = {"trained (this model)": trained, **{k: load_folder(v) for k, v in baselines.items()}}
        dinos = {"trained (this model)": folder, "untrained fallback": baselines["untrained fallback"]}
        photos = {name: examples / f"{name}.jpg" for name in HELD_OUT}
        agg, grid = agg_effect(dinos, photos, trained, agg_seeds, agg_steps)
        return {"retrieval_top1": retrieval(encoders), "key_structure": key_structure(encoders),
                "agg_image_guided": agg, "agg_steps": agg_steps, "agg_seeds": list(agg_seeds),
                "style_image": f"{STYLE_PHOTO} (training photo), {STYLE} filter"}, grid
