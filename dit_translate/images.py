"""Image I/O for dit-translate: loading, size rules, tensor conversion, saving.

This is the project's single place where images enter and leave: the CLI, the
Gradio app and every method go through these helpers.

Conventions
-----------
* PIL images handed out are mode ``"RGB"``; sizes are ``(width, height)``.
* Model tensors are ``(1, 3, H, W)`` float32 in ``[-1, 1]``; the conversions
  match ``diffusers.image_processor.VaeImageProcessor`` ``preprocess`` /
  ``postprocess`` bit for bit on RGB inputs whose sides are multiples of 8.
* Every problem caused by the image itself (unreadable, too large, too
  elongated, unwritable destination) raises :class:`ImageError`, a
  ``ValueError`` whose message is one sentence naming the source.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageSource",
    "MAX_ASPECT_RATIO",
    "center_crop_to_multiple",
    "fit_size",
    "fit_to_multiple",
    "load_image",
    "resize_to",
    "restore_aspect",
    "save_format",
    "save_image",
    "to_numpy01",
    "to_pil",
    "to_tensor",
    "to_working_size",
]

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest accepted declared pixel count (width * height), checked before decoding."""

MAX_ASPECT_RATIO = 16.0
"""Most elongated accepted image (longer side / shorter side) for the size rules."""

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

Image.init()
_READ_FORMATS = tuple(f for f in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF") if f in Image.OPEN)
"""Decoders we allow (when this Pillow has them); others (EPS runs Ghostscript, TGA has no magic) are refused."""

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
"""Leading bytes of the common formats, used to call a broken file "truncated" rather than "not an image"."""

_SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}
_SAVE_DEFAULTS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}

_FLOAT_TOLERANCE = 1e-3
"""Float pixels may stray this far outside [0, 1] (then clipped); further is an error."""

_WHITE = (255, 255, 255)

_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF Orientation value -> transposition that displays the image upright."""


class ImageError(ValueError):
    """An image could not be read, resized or written; the message says which and why."""


# --------------------------------------------------------------------------- loading


def load_image(src: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Load ``src`` as an independent, fully decoded mode ``"RGB"`` image.

    ``src`` may be a path, bytes, a binary file object, a PIL image (its current
    frame) or a numpy array (``HxW``, ``HxWx1``, ``HxWx3``, ``HxWx4``; uint8,
    uint16, or float in ``[0, 1]``).  EXIF orientation is applied, transparency
    is composited onto white, 16-bit data is scaled (not clipped) to 8 bits and
    animations yield their first frame.  Images declaring more than
    ``max_pixels`` pixels are refused before decoding (Pillow's own
    decompression-bomb limit applies as well).  Raises :class:`ImageError`.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if isinstance(src, Image.Image):
        label = "(PIL image)"
        _check_pixels(src.size, max_pixels, label)
        try:
            src.load()
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise _unreadable(label, exc) from exc
        return _normalise(src, label)
    if isinstance(src, np.ndarray):
        label = f"(numpy array of shape {src.shape} and dtype {src.dtype})"
        return _normalise(Image.fromarray(_array_to_uint8(src, label, max_pixels)), label)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(src)), "(in-memory bytes)", max_pixels)
    if isinstance(src, (str, os.PathLike)):
        return _load_path(Path(src), max_pixels)
    if hasattr(src, "read"):
        name = getattr(src, "name", None)
        label = f"'{Path(name).name}'" if isinstance(name, (str, os.PathLike)) else "(file object)"
        data = src.read()
        if not isinstance(data, bytes):
            raise ImageError(f"cannot read image {label}: the file object must be opened in binary mode")
        return _decode(io.BytesIO(data), label, max_pixels)
    raise TypeError(f"cannot load an image from a {type(src).__name__}")


def _load_path(path: Path, max_pixels: int) -> Image.Image:
    label = f"'{path.name or path}'"
    try:
        with open(path, "rb") as fh:
            return _decode(fh, label, max_pixels)
    except FileNotFoundError as exc:
        raise ImageError(f"cannot read image {label}: the file does not exist") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"cannot read image {label}: it is a directory, not a file") from exc
    except PermissionError as exc:
        raise ImageError(f"cannot read image {label}: permission denied") from exc
    except OSError as exc:
        raise ImageError(f"cannot read image {label}: {exc.strerror or exc}") from exc


def _decode(fh: BinaryIO, label: str, max_pixels: int) -> Image.Image:
    """Identify, size-check, then decode the first frame of ``fh`` (left open for the caller)."""
    head = fh.read(16)
    if not head:
        raise ImageError(f"cannot read image {label}: the file is empty")
    fh.seek(0)
    try:
        with Image.open(fh, formats=_READ_FORMATS) as im:
            _check_pixels(im.size, max_pixels, label)
            im.load()
            return _normalise(im, label)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(
            f"cannot read image {label}: the image is too large (its declared size exceeds "
            "Pillow's decompression-bomb limit)"
        ) from exc
    except UnidentifiedImageError as exc:
        if head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
            raise ImageError(f"cannot read image {label}: the file is truncated or corrupt") from exc
        raise ImageError(
            f"cannot read image {label}: the content is not a supported image format "
            f"({', '.join(_READ_FORMATS)})"
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _unreadable(label, exc) from exc


def _unreadable(label: str, exc: BaseException) -> ImageError:
    return ImageError(f"cannot read image {label}: the file is truncated or corrupt ({exc})")


def _check_pixels(size: tuple[int, int], max_pixels: int, label: str) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(f"cannot read image {label}: it has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"cannot read image {label}: the image is too large ({width}x{height} = "
            f"{width * height / 1e6:.1f} megapixels, the limit is {max_pixels / 1e6:.1f})"
        )


def _normalise(im: Image.Image, label: str) -> Image.Image:
    """Apply EXIF orientation, then convert to a new RGB image."""
    return _to_rgb(_apply_exif_orientation(im), label)


def _apply_exif_orientation(im: Image.Image) -> Image.Image:
    """Rotate/flip the pixels as the EXIF Orientation tag says.

    Same table as ``ImageOps.exif_transpose``, which is not used because it also
    re-serialises the EXIF block and raises (``struct.error``, ``TypeError``) on
    some corrupt ones; only the pixels matter here.
    """
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, TypeError, struct.error):
        return im  # unparseable metadata: keep the stored orientation
    method = _EXIF_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def _to_rgb(im: Image.Image, label: str) -> Image.Image:
    """Convert any supported mode to a new RGB image; alpha is composited onto white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im)
        if im.mode == "I":  # 32-bit integers: read as 16-bit data, like the I;16 modes
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        im = Image.fromarray(_array_to_uint8(arr, label, None))
    if im.mode == "P" and ("transparency" in im.info or im.palette.mode == "RGBA"):
        im = im.convert("RGBA")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    elif im.mode in ("LA", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        out = Image.new("RGB", im.size, _WHITE)
        out.paste(im, mask=im.getchannel("A"))
        return out
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageError(f"cannot read image {label}: unsupported colour mode {im.mode!r}") from exc


def _array_to_uint8(arr: np.ndarray, label: str, max_pixels: int | None) -> np.ndarray:
    """Validate a ``HxW[xC]`` array and return it as uint8 (``HxW``, ``HxWx3`` or ``HxWx4``).

    uint16 is rounded from 0..65535 to 0..255; floats must lie in ``[0, 1]``.
    """
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ImageError(f"cannot read image {label}: expected shape HxW, HxWx3 or HxWx4")
    if max_pixels is not None:
        _check_pixels((arr.shape[1], arr.shape[0]), max_pixels, label)
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 1:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # either byte order
        # x / 257 rounded to nearest, in exact integer arithmetic (257 is odd: no ties).
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"cannot read image {label}: it contains NaN or infinite values")
        low, high = float(arr.min()), float(arr.max())
        if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
            raise ImageError(
                f"cannot read image {label}: float pixel values must lie in [0, 1], "
                f"got [{low:g}, {high:g}]"
            )
        return np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    raise ImageError(
        f"cannot read image {label}: unsupported dtype {arr.dtype} "
        "(use uint8 0-255, uint16 0-65535 or float in [0, 1])"
    )


# --------------------------------------------------------------------------- size rules


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


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 1 or height < 1:
        raise ValueError(f"sizes must be positive, got {width}x{height}")
    return width, height


# --------------------------------------------------------------------------- tensors


def to_tensor(
    img: Image.Image, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """PIL image -> ``(1, 3, H, W)`` tensor in ``[-1, 1]`` (``VaeImageProcessor.preprocess``).

    Non-RGB modes are converted with the same rules as :func:`load_image`.
    """
    if img.mode != "RGB":
        img = _to_rgb(img, "(PIL image)")
    unit = np.asarray(img).astype(np.float32) / 255.0  # H, W, 3 in [0, 1]
    tensor = torch.from_numpy(unit).permute(2, 0, 1).unsqueeze(0)
    return (2.0 * tensor - 1.0).contiguous().to(device=device, dtype=dtype)


def to_numpy01(x: Image.Image | torch.Tensor) -> np.ndarray:
    """Image, or ``(3, H, W)`` / ``(1, 3, H, W)`` tensor in ``[-1, 1]`` -> ``HxWx3`` float32 in ``[0, 1]``.

    Tensors are clamped like ``VaeImageProcessor.postprocess(..., output_type="np")``.
    """
    if isinstance(x, Image.Image):
        if x.mode != "RGB":
            x = _to_rgb(x, "(PIL image)")
        return np.asarray(x).astype(np.float32) / 255.0
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a tensor of shape (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    x = x.detach().float()
    if torch.isnan(x).any():
        raise ImageError("cannot convert the tensor to an image: it contains NaN values")
    return (x * 0.5 + 0.5).clamp(0, 1).cpu().permute(1, 2, 0).numpy()


def to_pil(t: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` or ``(1, 3, H, W)`` tensor in ``[-1, 1]`` -> RGB image (``VaeImageProcessor.postprocess``).

    Values are clamped, scaled by 255 and rounded half to even; NaN raises :class:`ImageError`.
    """
    return Image.fromarray((to_numpy01(t) * 255).round().astype(np.uint8))


# --------------------------------------------------------------------------- saving


def save_format(path: str | os.PathLike) -> str:
    """The Pillow format :func:`save_image` writes for ``path``'s suffix; :class:`ImageError` if none (check
    an output path with it before any long computation)."""
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(
            f"cannot save image '{path.name}': unsupported file extension {path.suffix or '(none)'!r} "
            f"(use one of {', '.join(_SAVE_FORMATS)})"
        )
    return fmt


def save_image(img: Image.Image, path: str | os.PathLike, **options: object) -> Path:
    """Write ``img`` atomically to ``path`` and return it as a ``Path``.

    The format comes from the suffix (.png, .jpg/.jpeg, .webp, .bmp, .tif/.tiff;
    JPEG/WebP default to quality 95, ``options`` go to ``PIL.Image.save``).
    Parent folders are created.  The image goes to a temporary file in the
    destination folder which then replaces ``path``, so on failure no partial
    file is left and an existing ``path`` is untouched.  Raises :class:`ImageError`.
    """
    path = Path(path)
    fmt = save_format(path)
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = _to_rgb(img, f"'{path.name}'")
    what = f"cannot save image '{path.name}' in folder '{path.parent}'"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        created = True
        with os.fdopen(fd, "wb") as fh:
            img.save(fh, format=fmt, **{**_SAVE_DEFAULTS.get(fmt, {}), **options})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if created:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if isinstance(exc, (FileExistsError, NotADirectoryError)) and not created:
            raise ImageError(f"{what}: part of the folder path is a file, not a folder") from exc
        if isinstance(exc, (OSError, ValueError)):
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            raise ImageError(f"{what}: {reason[:1].lower()}{reason[1:]}") from exc
        raise
    return path



def to_working_size(img: Image.Image, side: int, multiple: int = 8) -> Image.Image:
    """Resize ``img`` keeping its aspect ratio so the longer side is about ``side`` and both sides are
    multiples of ``multiple`` (the preset's working size; small images are scaled up)."""
    _check_aspect(img.size)  # judged on the image itself: rounding the scaled size could only exaggerate it
    long = max(img.size)
    scale = side / long
    scaled = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return resize_to(img, fit_size(scaled, multiple=multiple, max_side=max(side, multiple)))
