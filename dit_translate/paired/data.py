"""Paired image folders: pix2pix "AB" images and two-folder pairs, with joint augmentation and splits.

Layouts (``[data] layout``):

* ``ab``: every image holds A on the left half and B on the right half (pix2pix's aligned datasets).
* ``folders``: ``<a_dir>/NAME`` pairs with ``<b_dir>/NAME`` (extensions may differ), e.g. face2comics.
* ``colorization``: any folder of colour photos; each photo is its own pair: the source is its grey
  version (CIELAB L kept, a = b = 0; ``colour.to_grey``), the target the photo. Items also carry
  "lab": (3, S, S) network channels of the target (L / 50 - 1, a / 110, b / 110; ``colour.lab_channels``)
  for the L -> ab colouriser. Grey photos teach a colouriser grey: leave them out of such a folder.

Splits: a folder with ``train/`` and ``val/`` (or ``test/``) subfolders uses them; otherwise each pair
goes to ``val`` when a hash of its name falls under ``val_fraction`` (stable as files are added).

Problems are reported, never hidden: unpaired names, unreadable files and size mismatches are
logged as warnings naming the file and skipped; a folder without a single usable pair is a
``DataError``. Items are ``{"source", "target"}`` tensors (3, S, S) in [-1, 1] after ``direction``,
with the pair's "index" and whether it was mirrored ("flip"), which the latent cache looks up.
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dit_translate.colour import lab_channels, to_grey
from dit_translate.errors import DataError, ImageError
from dit_translate.images import load_image, to_tensor
from dit_translate.paired.config import DataSpec
from dit_translate.sizes import resize_to

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SPLIT_DIRS = {"train": ("train",), "val": ("val", "test")}
_EXAMPLES = 5


@dataclass(frozen=True)
class Pair:
    """One pair: ``a`` and ``b`` are files (the same file for the ``ab`` layout); ``name`` identifies it."""

    name: str
    a: Path
    b: Path


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _examples(names: list[str]) -> str:
    more = f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else ""
    return ", ".join(names[:_EXAMPLES]) + more


def find_pairs(folder: Path, spec: DataSpec) -> list[Pair]:
    """All pairs directly in ``folder`` (no split handling); unpaired names are warned about and skipped."""
    if spec.layout in ("ab", "colorization"):
        return [Pair(p.name, p, p) for p in _images(folder)]
    dirs = [folder / spec.a_dir, folder / spec.b_dir]
    for d in dirs:
        if not d.is_dir():
            raise DataError(f"data folder {folder} has no '{d.name}' folder (layout 'folders' expects "
                            f"'{spec.a_dir}/' and '{spec.b_dir}/' with matching file names)")
    a_files, b_files = ({p.stem: p for p in _images(d)} for d in dirs)
    only_a, only_b = sorted(set(a_files) - set(b_files)), sorted(set(b_files) - set(a_files))
    if only_a:
        log.warning("%d image(s) in %s have no partner in %s/ and are skipped: %s",
                    len(only_a), dirs[0], spec.b_dir, _examples([a_files[n].name for n in only_a]))
    if only_b:
        log.warning("%d image(s) in %s have no partner in %s/ and are skipped: %s",
                    len(only_b), dirs[1], spec.a_dir, _examples([b_files[n].name for n in only_b]))
    return [Pair(n, a_files[n], b_files[n]) for n in sorted(set(a_files) & set(b_files))]


def _in_val(name: str, fraction: float) -> bool:
    return zlib.crc32(name.encode("utf-8")) % 10_000 < fraction * 10_000


def split_pairs(folder: str | Path, spec: DataSpec, split: str) -> list[Pair]:
    """The pairs of ``split`` ("train", "val" or "all") in ``folder``; raises ``DataError`` if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    subdirs = {s: next((folder / d for d in names if (folder / d).is_dir()), None) for s, names in SPLIT_DIRS.items()}
    if subdirs["train"] is not None:
        wanted = ["train", "val"] if split == "all" else [split]
        pairs = [p for s in wanted if subdirs[s] is not None for p in find_pairs(subdirs[s], spec)]
    else:
        pairs = find_pairs(folder, spec)
        if split != "all":
            pairs = [p for p in pairs if _in_val(p.name, spec.val_fraction) == (split == "val")]
    if not pairs:
        where = f"{folder} ({split} split)" if split != "all" else str(folder)
        expected = {"ab": "images with A|B side by side", "colorization": "colour photos"}.get(
            spec.layout, f"matching names in '{spec.a_dir}/' and '{spec.b_dir}/'")
        raise DataError(f"no image pairs found in {where}: expected {expected} "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    return pairs


def load_pair(pair: Pair, spec: DataSpec) -> tuple[Image.Image, Image.Image]:
    """(source, target) images of ``pair`` after the layout split and ``direction``; raises ``ImageError``."""
    a = load_image(pair.a)
    if spec.layout == "ab":
        if a.width % 2:
            raise ImageError(f"cannot split '{pair.a.name}' into A|B halves: its width {a.width} is odd")
        half = a.width // 2
        a, b = a.crop((0, 0, half, a.height)), a.crop((half, 0, a.width, a.height))
    elif spec.layout == "colorization":
        return grey_image(a), a
    else:
        b = load_image(pair.b)
        if a.size != b.size:
            raise ImageError(f"pair '{pair.name}': '{pair.a.name}' is {a.width}x{a.height} but "
                             f"'{pair.b.name}' is {b.width}x{b.height} (a pair must be pixel-aligned)")
    return (a, b) if spec.direction == "AtoB" else (b, a)


def grey_image(image: Image.Image) -> Image.Image:
    """The grey version of an RGB image: same CIELAB L, no chroma (8-bit)."""
    grey = to_grey(np.asarray(image.convert("RGB")))
    return Image.fromarray((grey * 255.0).round().astype(np.uint8))


def with_lab(item: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``colorization`` item: "source" the grey version of the (cropped) target, plus "lab": the
    colouriser's (3, S, S) channels of the target (see the module docstring)."""
    rgb = (item["target"].permute(1, 2, 0).double().numpy() + 1.0) / 2.0
    grey = torch.from_numpy(to_grey(rgb)).permute(2, 0, 1).float() * 2 - 1
    return {**item, "source": grey, "lab": torch.from_numpy(lab_channels(rgb))}


def joint_transform(source: Image.Image, target: Image.Image, size: int, load_size: int,
                    rng: random.Random | None = None, flip: bool = True) -> dict[str, torch.Tensor]:
    """Resize both to ``load_size`` squared, crop ``size`` at one offset (random with ``rng``, else central)
    and, with ``rng`` and ``flip``, mirror both with probability 1/2.

    Returns {"source", "target"}: (3, size, size) tensors in [-1, 1], and "flip": a bool tensor.
    """
    load = max(load_size, size)
    images = [resize_to(im, (load, load)) for im in (source, target)]
    if rng is None:
        left = top = (load - size) // 2
        flip = False
    else:
        left, top = rng.randint(0, load - size), rng.randint(0, load - size)
        flip = flip and rng.random() < 0.5
    images = [im.crop((left, top, left + size, top + size)) for im in images]
    if flip:
        images = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]
    src, tgt = (to_tensor(im)[0] for im in images)
    return {"source": src, "target": tgt, "flip": torch.tensor(flip)}


class PairedDataset(torch.utils.data.Dataset):
    """Pairs of one split as tensors; items are addressed by ``(index, augmentation seed)``.

    With ``augment`` the crop offset and flip come from ``random.Random(seed)``, so a batch depends only
    on the indices and seeds the sampler hands out (exact resume, any number of workers). A pair that
    fails to load is warned about once and replaced by the next one. Items are ``joint_transform``'s
    dict plus "index": the pair actually returned.
    """

    def __init__(self, folder: str | Path, spec: DataSpec, size: int, split: str = "train",
                 augment: bool = True) -> None:
        self.spec, self.size, self.augment = spec, size, augment
        self.pairs = split_pairs(folder, spec, split)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, pair: Pair) -> tuple[Image.Image, Image.Image]:
        """``load_pair``, except that a ``colorization`` pair's grey source is made after the crop
        (``with_lab``), from the cropped photo itself."""
        if self.spec.layout == "colorization":
            photo = load_image(pair.a)
            return photo, photo
        return load_pair(pair, self.spec)

    @property
    def load_size(self) -> int:
        """The side both images are resized to before the ``size`` crop (``[data] load_size``, else ``size``)."""
        return self.spec.load_size or self.size

    @property
    def fixed_crop(self) -> bool:
        """Whether every item of a pair shows the same pixels up to the flip (no random crop to make)."""
        return self.load_size <= self.size

    def unaugmented(self, index: int) -> dict[str, torch.Tensor] | None:
        """Pair ``index`` centrally cropped and not flipped (``joint_transform`` without ``rng``), or
        ``None`` if it cannot be read (``__getitem__`` then serves the next pair in its place)."""
        try:
            source, target = self._load(self.pairs[index])
        except ImageError:
            return None
        item = joint_transform(source, target, self.size, self.load_size)
        return with_lab(item) if self.spec.layout == "colorization" else item

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, 0)
        for offset in range(len(self.pairs)):
            i = (index + offset) % len(self.pairs)
            if i in self._bad:
                continue
            try:
                source, target = self._load(self.pairs[i])
            except ImageError as e:
                self._bad.add(i)
                log.warning("skipping pair %r: %s", self.pairs[i].name, e)
                continue
            rng = random.Random(seed) if self.augment else None
            item = joint_transform(source, target, self.size, self.load_size, rng, self.spec.flip)
            if self.spec.layout == "colorization":
                item = with_lab(item)
            return {**item, "index": torch.tensor(i), "seed": torch.tensor(seed, dtype=torch.int64)}
        raise DataError(f"none of the {len(self.pairs)} pairs could be read (see the warnings above)")


class PairSampler(torch.utils.data.Sampler):
    """An endless, resumable stream of batches of ``(index, augmentation seed)`` for one process.

    Global sample position ``p`` maps to epoch ``p // n`` (a permutation seeded by ``seed`` and the epoch)
    and augmentation seed ``(seed, p)``. Micro-batch ``k`` of process ``rank`` (of ``world``) covers
    positions ``((k * world + rank) * batch, ... + batch)``; sampling starts at micro-batch ``start``.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed, self.start, self.rank, self.world = n, batch, seed, start, rank, world
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perm = (epoch, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def batch_at(self, k: int) -> list[tuple[int, int]]:
        """Micro-batch ``k`` of this process as ``(index, augmentation seed)`` pairs."""
        first = (k * self.world + self.rank) * self.batch
        out = []
        for p in range(first, first + self.batch):
            out.append((int(self._permutation(p // self.n)[p % self.n]), self.seed * 1_000_003 + p))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start
        while True:
            yield self.batch_at(k)
            k += 1
