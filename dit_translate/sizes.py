"""Image size rules: sides that are multiples of a model's factor, the working size, the aspect ratio.

Images are PIL images here; resizing is Lanczos with antialiasing (``resize_to``). Errors are
``ImageError`` (too elongated, too small to fit).
"""

from __future__ import annotations

from fractions import Fraction

from PIL import Image

from dit_translate.errors import ImageError

MAX_ASPECT_RATIO = 16.0
"""Most elongated accepted image (longer side / shorter side) for the size rules."""


def fit_size(
    size: tuple[int, int],
    *,
    multiple: int = 8,
    max_side: int | None = None,
    min_side: int | None = None,
) -> tuple[int, int]:
    """Target ``(width, height)`` for :func:`fit_to_multiple`, without touching pixels.

    The size is scaled (keeping its aspect ratio) so the shorter side is at least
    ``min_side`` and the longer side at most ``max_side``, then each side is
    rounded to the nearest multiple of ``multiple`` (at least one multiple) and
    kept within ``[min_side, max_side]``.  Raises :class:`ImageError` for images
    more elongated than ``MAX_ASPECT_RATIO``:1 or that the limits cannot fit.
    """
    width, height = _check_size(size)
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    lo, hi = 1, None
    if min_side is not None:
        if min_side < 1:
            raise ValueError(f"min_side must be positive, got {min_side}")
        lo = max(1, -(-min_side // multiple))
    if max_side is not None:
        hi = max_side // multiple
        if hi < lo:
            raise ValueError(f"no multiple of {multiple} fits min_side={min_side}, max_side={max_side}")
    what = f"cannot fit a {width}x{height} image"
    _check_aspect((width, height))
    long, short = max(width, height), min(width, height)
    scale = Fraction(1)  # exact: a float scale of 1/849 turns 849 pixels into 0.999...
    if min_side is not None and short < min_side:
        scale = Fraction(min_side, short)
    if max_side is not None and long * scale > max_side:
        scale = Fraction(max_side, long)
        if min_side is not None and short * scale < min_side:
            raise ImageError(
                f"{what}: a shorter side of at least {min_side} needs a longer side above {max_side}"
            )
    if short * scale < 1:
        raise ImageError(f"{what}: limiting the longer side to {max_side} leaves the shorter side under one pixel")

    def side(length: int) -> int:
        n = max(lo, round(length * scale / multiple))
        return (n if hi is None else min(n, hi)) * multiple

    return side(width), side(height)


def _check_aspect(size: tuple[int, int]) -> None:
    """:class:`ImageError` if ``size`` is more elongated than ``MAX_ASPECT_RATIO``:1."""
    long, short = max(size), min(size)
    if long / short > MAX_ASPECT_RATIO:
        raise ImageError(
            f"cannot fit a {size[0]}x{size[1]} image: its aspect ratio ({long / short:.4g}:1) is more extreme "
            f"than the supported {MAX_ASPECT_RATIO:g}:1"
        )


def fit_to_multiple(
    img: Image.Image,
    *,
    multiple: int = 8,
    max_side: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """Resize ``img`` to :func:`fit_size` of its size (LANCZOS down, BICUBIC up)."""
    return resize_to(img, fit_size(img.size, multiple=multiple, max_side=max_side, min_side=min_side))


def center_crop_to_multiple(img: Image.Image, multiple: int = 8) -> Image.Image:
    """Crop ``img`` centrally to the largest size whose sides are multiples of ``multiple``."""
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    width, height = img.size
    new_w, new_h = width - width % multiple, height - height % multiple
    if new_w == 0 or new_h == 0:
        raise ImageError(f"cannot crop a {width}x{height} image to multiples of {multiple}: it is too small")
    left, top = (width - new_w) // 2, (height - new_h) // 2
    return img.crop((left, top, left + new_w, top + new_h))


def resize_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Return ``img`` resized to exactly ``size`` = ``(width, height)``.

    LANCZOS is used when either side shrinks (it antialiases), BICUBIC otherwise.
    """
    size = _check_size(size)
    if size == img.size:
        return img.copy()
    shrinks = size[0] < img.width or size[1] < img.height
    return img.resize(size, Image.Resampling.LANCZOS if shrinks else Image.Resampling.BICUBIC)


def restore_aspect(
    out_img: Image.Image, original_size: tuple[int, int], *, max_side: int | None = None
) -> Image.Image:
    """Resize a model output back to ``original_size`` = ``(width, height)``.

    With ``max_side``, an original whose longer side exceeds it is matched in
    aspect ratio only, at a size whose longer side is ``max_side``.
    """
    width, height = _check_size(original_size)
    if max_side is not None:
        if max_side < 1:
            raise ValueError(f"max_side must be positive, got {max_side}")
        scale = max_side / max(width, height)
        if scale < 1:
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return resize_to(out_img, (width, height))


OUTPUT_SIZES = ("input", "working")


def output_image(out_img: Image.Image, original_size: tuple[int, int], output_size: str = "input",
                 max_side: int | None = None) -> Image.Image:
    """The image to write: the result brought back to the input's size (``"input"``; the longer side at most
    ``max_side`` when given), or the model's own pixels at the working size (``"working"``)."""
    if output_size not in OUTPUT_SIZES:
        raise ValueError(f"output size must be one of {', '.join(OUTPUT_SIZES)}, got {output_size!r}")
    if output_size == "working":
        return out_img.copy()
    return restore_aspect(out_img, original_size, max_side=max_side)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"sizes must be positive, got {width}x{height}")
    return width, height


def to_working_size(img: Image.Image, side: int, multiple: int = 8) -> Image.Image:
    """Resize ``img`` keeping its aspect ratio so the longer side is about ``side`` and both sides are
    multiples of ``multiple`` (the preset's working size; small images are scaled up)."""
    _check_aspect(img.size)  # judged on the image itself: rounding the scaled size could only exaggerate it
    long = max(img.size)
    scale = side / long
    scaled = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return resize_to(img, fit_size(scaled, multiple=multiple, max_side=max(side, multiple)))
