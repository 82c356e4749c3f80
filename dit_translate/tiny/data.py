"""The tiny world's data: public-domain photos from the scikit-image wheel and classical styles.

Photos load offline (no pooch). ``HELD_OUT`` photos never enter the training split. Training
images are random square crops (random scale, horizontal flip) resized to ``size`` pixels; each
crop is rendered in every style of ``STYLES`` by deterministic classical filters, so a crop and
its stylised versions are pixel-aligned pairs. Captions name the style and the photo's content.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage import color, feature
from skimage import data as skdata

# skimage.data loader name -> content words used in captions
PHOTOS: dict[str, str] = {
    "astronaut": "an astronaut",
    "rocket": "a rocket",
    "hubble_deep_field": "galaxies in deep space",
    "retina": "a retina",
    "immunohistochemistry": "stained tissue",
    "brick": "a brick wall",
    "grass": "grass",
    "gravel": "gravel",
    "coins": "old coins",
    "camera": "a cameraman",
    "clock": "a clock",
    "cell": "a cell",
    "horse": "a horse",
    "text": "letters",
    "chelsea": "a cat",
    "coffee": "a cup of coffee",
}
HELD_OUT: tuple[str, ...] = ("chelsea", "coffee")
SYNTHETIC_CONTENT = "abstract shapes"  # the content words of ``dead_leaves`` images
STYLES: tuple[str, ...] = ("photo", "comic", "pencil", "watercolor")
_STYLE_PHRASES = {
    "photo": "a photo of",
    "comic": "a comic drawing of",
    "pencil": "a pencil sketch of",
    "watercolor": "a watercolor painting of",
}


def caption(style: str, content: str) -> str:
    """``caption("comic", "a cat") == "a comic drawing of a cat"``."""
    return f"{_STYLE_PHRASES[style]} {content}"


def style_caption(style: str) -> str:
    """The caption naming only the style: ``style_caption("comic") == "a comic drawing"``."""
    return _STYLE_PHRASES[style].removesuffix(" of")


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """Any skimage image (bool, grey, RGB, RGBA) -> uint8 HxWx3."""
    if img.dtype == bool:
        img = np.where(img, 255, 0).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.shape[-1] == 4:
        alpha = img[..., 3:].astype(np.float32) / 255.0
        img = (img[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def load_photos(split: str) -> dict[str, np.ndarray]:
    """Photos of ``split`` ("train", "test" or "all") as uint8 HxWx3 arrays, in a fixed order."""
    if split == "train":
        names = [n for n in PHOTOS if n not in HELD_OUT]
    elif split == "test":
        names = list(HELD_OUT)
    elif split == "all":
        names = list(PHOTOS)
    else:
        raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'all'")
    return {n: _as_rgb(getattr(skdata, n)()) for n in names}


def load_extra_photos(folder: str | Path, split: str) -> dict[str, tuple[np.ndarray, str]]:
    """The Debian-package photos of ``split`` extracted into ``folder`` by ``python -m
    dit_translate.tiny photos --out folder``: name -> (uint8 HxWx3, content words). Their split
    comes from ``assets/tiny/data/photos.json``; a missing folder raises FileNotFoundError naming
    the command."""
    from dit_translate.tiny.photos import load_extracted

    return load_extracted(folder, split)


# ---------------------------------------------------------------- styles (uint8 HxWx3 -> same)


def _luma(x: np.ndarray) -> np.ndarray:
    """float HxWx3 in [0,1] -> HxW luminance in [0,1]."""
    return x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _smooth_colors(x: np.ndarray, size: int) -> np.ndarray:
    """Edge-preserving-ish smoothing: a per-channel median filter."""
    return np.stack([ndimage.median_filter(x[..., c], size=size) for c in range(3)], axis=-1)


def _saturate(x: np.ndarray, amount: float) -> np.ndarray:
    grey = _luma(x)[..., None]
    return np.clip(grey + (x - grey) * amount, 0.0, 1.0)


def _comic(x: np.ndarray) -> np.ndarray:
    """Flat, saturated colours (median smoothing + 4 levels per channel) and black ink lines."""
    flat = _saturate(_smooth_colors(x, 5), 1.4)
    levels = 4
    flat = (np.floor(flat * levels).clip(0, levels - 1) + 0.5) / levels
    ink = feature.canny(_luma(x), sigma=2.0, low_threshold=0.05, high_threshold=0.12)
    out = flat.copy()
    out[ink] = 0.05
    return out


def _pencil(x: np.ndarray) -> np.ndarray:
    """Grey colour-dodge sketch: luminance divided by its blurred negative, darker on edges."""
    grey = _luma(x)
    blurred_neg = ndimage.gaussian_filter(1.0 - grey, sigma=3.0)
    dodge = np.clip(grey / np.maximum(1.0 - blurred_neg, 1e-3), 0.0, 1.0)
    edges = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    sketch = np.clip(dodge - 0.5 * np.clip(edges - 0.1, 0.0, 1.0), 0.0, 1.0) ** 1.5
    return np.stack([sketch] * 3, axis=-1)


def _watercolor(x: np.ndarray) -> np.ndarray:
    """Soft washes on paper: heavy smoothing, light colours, darker pooled borders, paper grain."""
    wash = ndimage.gaussian_filter(_smooth_colors(x, 7), sigma=(1.0, 1.0, 0.0))
    wash = _saturate(wash, 1.3)
    wash = 0.25 + 0.75 * wash  # lighter, as diluted pigment
    luma = _luma(wash)
    borders = np.abs(luma - ndimage.gaussian_filter(luma, 2.0))
    grain = np.random.default_rng(0).standard_normal(x.shape[:2]).astype(np.float32)
    grain = ndimage.gaussian_filter(grain, 1.0) * 0.03
    out = wash - 1.5 * borders[..., None] + grain[..., None]
    return np.clip(out, 0.0, 1.0)


_STYLE_FNS = {"photo": None, "comic": _comic, "pencil": _pencil, "watercolor": _watercolor}


def stylize(img: np.ndarray, style: str) -> np.ndarray:
    """Render uint8 HxWx3 ``img`` in ``style`` (one of ``STYLES``); deterministic, same shape."""
    if style not in _STYLE_FNS:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    fn = _STYLE_FNS[style]
    if fn is None:
        return img.copy()
    out = fn(img.astype(np.float32) / 255.0)
    return (out * 255.0).round().clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------- crops and the training set


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (side 30%..100% of the short side), maybe flipped, resized to size."""
    h, w = img.shape[:2]
    side = int(rng.uniform(0.3, 1.0) * min(h, w))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = img[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return resize(crop, size)


def random_recolor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random colour variant of uint8 HxWx3 ``img``: permuted channels, per-channel gains 0.8..1.2."""
    gains = rng.uniform(0.8, 1.2, size=3)
    out = img[..., rng.permutation(3)].astype(np.float32) * gains
    return out.round().clip(0, 255).astype(np.uint8)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 -> uint8 size x size x 3 (antialiased)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.LANCZOS))


def render(photo_crop: np.ndarray, style: str) -> np.ndarray:
    """Stylise a size x size crop at twice its resolution, then downsample (antialiased lines)."""
    size = photo_crop.shape[0]
    if style == "photo":
        return photo_crop.copy()
    big = resize(photo_crop, 2 * size)
    return np.asarray(Image.fromarray(stylize(big, style)).resize((size, size), Image.BOX))


def _leaf_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour in [0, 1], float32: any hue, mostly low saturation, any brightness."""
    hsv = np.array([[[rng.random(), rng.beta(1.2, 2.5), rng.uniform(0.1, 0.95)]]])
    return color.hsv2rgb(hsv)[0, 0].astype(np.float32)


def dead_leaves(size: int, rng: np.random.Generator, max_leaves: int = 300) -> np.ndarray:
    """A synthetic "photo", uint8 (size, size, 3): the dead-leaves model (Lee, Mumford & Huang 2001),
    occluding discs, ellipses and rectangles with power-law radii (density ~ r^-3), laid front to back
    until the image is covered (what is left shows a background leaf); each leaf a random colour (mostly
    muted, as in photos) with a linear shading gradient and a blurred-noise texture of random grain;
    drawn at twice the size with a slight optical blur, then downsampled. Natural-image-like edge and
    size statistics with no particular content: pairs of these teach a filter's local rule instead of
    the fourteen photos' look."""
    big = 2 * size
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    textures = [ndimage.gaussian_filter(rng.standard_normal((big, big)).astype(np.float32), s) for s in (0.7, 1.5, 3.0)]
    textures = [t / (t.std() + 1e-6) for t in textures]
    img = np.zeros((big, big, 3), np.float32)
    covered = np.zeros((big, big), bool)
    r_min, r_max = 3.0, big / 1.5
    for _ in range(max_leaves):
        r = (r_min**-2 - rng.random() * (r_min**-2 - r_max**-2)) ** -0.5
        cx, cy = rng.uniform(-r, big + r, size=2)
        angle, aspect = rng.uniform(0, np.pi), rng.uniform(0.4, 1.0)
        disc = rng.random() < 0.7
        # every point of the leaf lies within r * sqrt(2) < 1.5 r of its centre: work in that box only
        box = tuple(slice(max(0, int(c - 1.5 * r)), max(0, int(c + 1.5 * r) + 2)) for c in (cy, cx))
        u = (xx[box] - cx) * np.cos(angle) + (yy[box] - cy) * np.sin(angle)
        v = (-(xx[box] - cx) * np.sin(angle) + (yy[box] - cy) * np.cos(angle)) / aspect
        inside = (u**2 + v**2 <= r**2) if disc else (np.maximum(np.abs(u), np.abs(v)) <= r)
        mask = inside & ~covered[box]
        if not mask.any():
            continue
        colour = _leaf_colour(rng)
        shade = 1.0 + rng.uniform(-0.4, 0.4) * (u[mask] / max(r, 1.0))
        grain = textures[rng.integers(3)][box][mask] * rng.uniform(0.0, 0.12)
        img[box][mask] = colour * shade[:, None] + grain[:, None]
        covered[box] |= mask
        if covered.all():
            break
    img[~covered] = _leaf_colour(rng) * (1.0 + rng.uniform(-0.3, 0.3) * (xx[~covered] / big - 0.5))[:, None]
    img = ndimage.gaussian_filter(img, sigma=(rng.uniform(0.3, 1.2),) * 2 + (0,))
    return resize((img.clip(0, 1) * 255).round().astype(np.uint8), size)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float (3,H,W) in [-1,1]."""
    return torch.tensor(img).permute(2, 0, 1).float() / 127.5 - 1.0


class TinyDataset(torch.utils.data.Dataset):
    """Pre-rendered crops of one split: item i -> (image (3,S,S) in [-1,1], caption, style).

    ``crops_per_photo`` random crops of each photo are drawn with ``seed`` and rendered in every
    style of ``styles``; ``images`` holds them all as one uint8 tensor (N,3,S,S) for fast batching.
    With ``recolor`` each crop first gets random colours (``random_recolor``; captions unchanged),
    which widens the colour range a VAE sees beyond the few colour photos. ``synthetic`` more
    "photos" are ``dead_leaves`` images (content ``SYNTHETIC_CONTENT``), rendered the same way.
    ``extra_photos`` (a folder from ``python -m dit_translate.tiny photos``) adds that folder's
    photos of the same split after the scikit-image ones (``load_extra_photos``).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        crops_per_photo: int = 64,
        styles: Sequence[str] = STYLES,
        seed: int = 0,
        recolor: bool = False,
        synthetic: int = 0,
        extra_photos: str | Path | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        images, self.captions, self.styles, self.photo_names = [], [], [], []
        crops = []
        photos = {name: (img, PHOTOS[name]) for name, img in load_photos(split).items()}
        if extra_photos is not None:
            photos.update(load_extra_photos(extra_photos, split))
        for name, (photo, content) in photos.items():
            for _ in range(crops_per_photo):
                crop = random_crop(photo, size, rng)
                crops.append((name, content, random_recolor(crop, rng) if recolor else crop))
        crops += [("dead_leaves", SYNTHETIC_CONTENT, dead_leaves(size, rng)) for _ in range(synthetic)]
        for name, content, crop in crops:
            for style in styles:
                images.append(render(crop, style))
                self.captions.append(caption(style, content))
                self.styles.append(style)
                self.photo_names.append(name)
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        return self.images[i].float() / 127.5 - 1.0, self.captions[i], self.styles[i]

    def batch(self, idx: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Images ``idx`` as float (B,3,S,S) in [-1,1], horizontally flipped where ``flip``."""
        x = self.images[idx].float() / 127.5 - 1.0
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, [self.captions[int(i)] for i in idx]


def write_pairs(out: str | Path, size: int = 64, crops_per_photo: int = 384, style: str = "comic",
                seed: int = 0, recolored: float = 0.5, synthetic: float = 0.5) -> Path:
    """Write a pix2pix "AB" folder of photo | ``style`` crops: ``out/train`` (training photos) and
    ``out/test`` (the held-out photos, ``crops_per_photo // 32`` crops each, another seed, never recoloured).

    A ``recolored`` fraction of the training crops first gets random colours (``random_recolor``, then
    rendered): fourteen photos are few, and the wider colour range helps a model on unseen photos.
    ``synthetic`` x (training photo crops) more training pairs are ``dead_leaves`` images and their
    renderings (``leaves_NNNNN.png``): a model that has to get the filter right on those cannot get by
    on the fourteen photos' look. Each PNG is (size x 2*size): the photo crop on the left, its
    rendering on the right. Returns ``out``.
    """
    out = Path(out)
    n_recolored = round(crops_per_photo * recolored)
    parts = (("train", crops_per_photo - n_recolored, seed, False, ""),
             ("train", n_recolored, seed + 2, True, "r"),
             ("test", max(1, crops_per_photo // 32), seed + 1, False, ""))
    for split, n, split_seed, recolor, tag in parts:
        if n == 0:
            continue
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        data = TinyDataset(split, size, n, styles=("photo", style), seed=split_seed, recolor=recolor)
        images = data.images.permute(0, 2, 3, 1).numpy()
        for i in range(0, len(images), 2):
            name = f"{data.photo_names[i]}{tag}_{i // 2 % n:04d}.png"
            Image.fromarray(np.concatenate([images[i], images[i + 1]], axis=1)).save(folder / name)
    rng = np.random.default_rng(seed + 3)
    for i in range(round(synthetic * crops_per_photo * (len(PHOTOS) - len(HELD_OUT)))):
        photo = dead_leaves(size, rng)
        Image.fromarray(np.concatenate([photo, render(photo, style)], axis=1)).save(out / "train" / f"leaves_{i:05d}.png")
    return out
