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
import stat
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import ExifTags, Image, UnidentifiedImageError

from dit_translate.errors import ImageError, WriteError
from dit_translate.files import atomic_write

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DRAFT_PIXELS",
    "ImageError",
    "ImageSource",
    "check_destination",
    "load_image",
    "save_format",
    "save_image",
    "to_numpy01",
    "to_pil",
    "to_tensor",
]

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest accepted declared pixel count (width * height), checked before decoding."""

DRAFT_PIXELS = 4_000_000
"""JPEGs larger than this are decoded reduced (libjpeg's DCT scaling by 1/2, 1/4 or 1/8, ``Image.draft``) to the
smallest scale that still has at least this many pixels: a 40 MP photo costs about a tenth of the memory and
time, and every working size (at most 1024 px a side) is far below it."""

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


def _open_regular(path: Path, label: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file; a FIFO, device or socket is refused without
    blocking (``O_NONBLOCK``: opening a FIFO with no writer would otherwise wait forever)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = "a directory, not a file" if stat.S_ISDIR(mode) else "not a regular file (a pipe, device or socket)"
        raise ImageError(f"cannot read image {label}: it is {what}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _load_path(path: Path, max_pixels: int) -> Image.Image:
    label = f"'{path.name or path}'"
    try:
        with _open_regular(path, label) as fh:
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
            _draft(im)
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


def _draft(im: Image.Image) -> None:
    """Have a JPEG larger than ``DRAFT_PIXELS`` decode reduced (see ``DRAFT_PIXELS``)."""
    width, height = im.size
    if im.format == "JPEG" and width * height > DRAFT_PIXELS:
        scale = (DRAFT_PIXELS / (width * height)) ** 0.5
        im.draft(im.mode, (max(1, int(width * scale)), max(1, int(height * scale))))


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


def check_destination(path: str | os.PathLike) -> str:
    """``save_format(path)``, and :class:`ImageError` if ``path`` is an existing folder: check an output path with
    it before any long computation."""
    fmt = save_format(path)
    if Path(path).is_dir():
        raise ImageError(f"cannot save image '{Path(path).name}': it is an existing folder, not a file")
    return fmt


def _reason(exc: BaseException) -> str:
    reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return reason[:1].lower() + reason[1:]


def save_image(img: Image.Image, path: str | os.PathLike, **options: object) -> Path:
    """Write ``img`` atomically to ``path`` and return it as a ``Path``.

    The format comes from the suffix (.png, .jpg/.jpeg, .webp, .bmp, .tif/.tiff;
    JPEG/WebP default to quality 95, ``options`` go to ``PIL.Image.save``).
    Parent folders are created. The image is written with ``files.atomic_write`` (a temporary file in
    the destination folder which then replaces ``path``), so on failure no partial file is left and an
    existing ``path`` is untouched. Raises :class:`ImageError`.
    """
    path = Path(path)
    fmt = save_format(path)
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = _to_rgb(img, f"'{path.name}'")
    what = f"cannot save image '{path.name}' in folder '{path.parent}'"

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            img.save(fh, format=fmt, **{**_SAVE_DEFAULTS.get(fmt, {}), **options})

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise ImageError(f"{what}: part of the folder path is a file, not a folder") from exc
    except OSError as exc:
        raise ImageError(f"{what}: {_reason(exc)}") from exc
    try:
        atomic_write(path, write)
    except WriteError as exc:
        raise ImageError(f"{what}: {_reason(exc.__cause__ or exc)}") from exc
    except ValueError as exc:  # Pillow refusing the options or the mode
        raise ImageError(f"{what}: {_reason(exc)}") from exc
    return path



