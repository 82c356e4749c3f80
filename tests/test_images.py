"""Tests for dit_translate.images: loading, size rules, tensor conversion, saving."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, features

from dit_translate import images
from dit_translate.images import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    load_image,
    save_image,
    to_numpy01,
    to_pil,
    to_tensor,
)
from dit_translate.sizes import (
    MAX_ASPECT_RATIO,
    center_crop_to_multiple,
    fit_size,
    fit_to_multiple,
    resize_to,
    restore_aspect,
)

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def pixels(img: Image.Image) -> list[tuple[int, int, int]]:
    """Row-major list of RGB pixels."""
    assert img.mode == "RGB"
    return [tuple(int(v) for v in px) for px in np.asarray(img).reshape(-1, 3)]


def png_header(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG that declares width x height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- modes


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([*RED, *GREEN, *BLUE])
    img.putdata([0, 1, 2])
    img.info["transparency"] = 1
    return img


def _palette_rgba() -> Image.Image:
    img = Image.new("P", (2, 1))
    img.putpalette([*RED, 0, *BLUE, 255], rawmode="RGBA")
    img.putdata([0, 1])
    return img


def _pa() -> Image.Image:
    img = Image.new("PA", (2, 1))
    img.putpalette([*RED, *BLUE])
    img.putdata([(0, 0), (1, 255)])
    return img


MODE_CASES = {
    "L": (Image.fromarray(np.array([[0, 77, 255]], np.uint8)), [BLACK, (77, 77, 77), WHITE]),
    "1": (Image.fromarray(np.array([[False, True]])), [BLACK, WHITE]),
    "I;16": (
        Image.fromarray(np.array([[0, 128, 129, 25700, 32768, 65535]], np.uint16)),
        [BLACK, BLACK, (1, 1, 1), (100, 100, 100), (128, 128, 128), WHITE],
    ),
    "I;16B": (
        Image.frombytes("I;16B", (3, 1), struct.pack(">3H", 0, 32768, 65535)),
        [BLACK, (128, 128, 128), WHITE],
    ),
    "I": (
        Image.fromarray(np.array([[-5, 32768, 65535, 70000]], np.int32)),
        [BLACK, (128, 128, 128), WHITE, WHITE],
    ),
    "F": (Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)), [BLACK, (128, 128, 128), WHITE]),
    "RGBA": (
        Image.fromarray(np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], np.uint8)),
        [WHITE, (10, 20, 30), (127, 127, 127)],
    ),
    "LA": (Image.fromarray(np.array([[[0, 0], [100, 255]]], np.uint8), "LA"), [WHITE, (100, 100, 100)]),
    "PA": (_pa(), [WHITE, BLUE]),
    "P+transparency": (_palette_with_transparency(), [RED, WHITE, BLUE]),
    "P+RGBA palette": (_palette_rgba(), [WHITE, BLUE]),
    "RGBa": (Image.new("RGBa", (1, 1), (50, 50, 50, 128)), [(177, 177, 177)]),
    "CMYK": (
        Image.frombytes("CMYK", (4, 1), bytes([0, 255, 255, 0, 0, 0, 0, 255, 0, 0, 0, 0, 255, 0, 255, 0])),
        [RED, BLACK, WHITE, GREEN],
    ),
}


@pytest.mark.parametrize("case", sorted(MODE_CASES))
def test_modes_convert_to_expected_rgb(case: str) -> None:
    img, expected = MODE_CASES[case]
    out = load_image(img)
    assert out.mode == "RGB" and out.size == img.size
    assert pixels(out) == expected


def test_ycbcr_converts_to_rgb() -> None:
    out = load_image(Image.new("YCbCr", (2, 2), (76, 85, 255)))
    assert np.abs(np.asarray(out, int) - RED).max() <= 2


@pytest.mark.parametrize(
    ("fmt", "make"),
    [
        ("PNG", lambda: Image.fromarray(np.array([[0, 32768, 65535]], np.uint16))),  # 16-bit grey PNG
        ("TIFF", lambda: Image.frombytes("CMYK", (3, 1), bytes([0, 255, 255, 0] + [0] * 4 + [0, 0, 0, 255]))),
        ("PNG", _palette_with_transparency),
        ("GIF", _palette_with_transparency),
    ],
)
def test_modes_survive_a_file_round_trip(fmt: str, make) -> None:
    img = make()
    assert pixels(load_image(encode(img, fmt))) == pixels(load_image(img))


def test_png_trns_chunk_for_grey_and_rgb_is_composited_on_white() -> None:
    grey = Image.fromarray(np.array([[7, 8]], np.uint8))
    rgb = Image.fromarray(np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8))
    assert pixels(load_image(encode(grey, "PNG", transparency=7))) == [WHITE, (8, 8, 8)]
    assert pixels(load_image(encode(rgb, "PNG", transparency=(1, 2, 3)))) == [WHITE, (4, 5, 6)]


def test_pil_input_is_not_modified() -> None:
    img = _palette_with_transparency()
    out = load_image(img)
    assert img.mode == "P" and out is not img
    rgb = Image.new("RGB", (2, 2), RED)
    out = load_image(rgb)
    out.putpixel((0, 0), BLUE)
    assert rgb.getpixel((0, 0)) == RED


# --------------------------------------------------------------------------- numpy


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0, 200]], np.uint8), [BLACK, (200, 200, 200)]),
        (np.array([[[0], [200]]], np.uint8), [BLACK, (200, 200, 200)]),
        (np.array([[[1, 2, 3]]], np.uint8), [(1, 2, 3)]),
        (np.array([[[1, 2, 3, 0], [1, 2, 3, 255]]], np.uint8), [WHITE, (1, 2, 3)]),
        (np.array([[0, 32768, 65535]], np.uint16), [BLACK, (128, 128, 128), WHITE]),
        (np.array([[0, 32768, 65535]], ">u2"), [BLACK, (128, 128, 128), WHITE]),
        (np.array([[[65535, 0, 32768]]], np.uint16), [(255, 0, 128)]),
        (np.array([[[65535, 0, 0, 0], [65535, 0, 0, 65535]]], np.uint16), [WHITE, RED]),
        (np.array([[0.0, 0.5, 1.0]], np.float64), [BLACK, (128, 128, 128), WHITE]),
        (np.array([[[1.0, 0.0, 0.0]]], np.float32), [RED]),
        (np.array([[[1.0, 0.0, 0.0]]], np.float16), [RED]),
        (np.array([[-1e-4, 1 + 1e-4]], np.float32), [BLACK, WHITE]),
        (np.array([[[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]]], np.float32), [WHITE, BLUE]),
    ],
)
def test_numpy_arrays(array: np.ndarray, expected: list) -> None:
    assert pixels(load_image(array)) == expected


def test_numpy_non_contiguous_view() -> None:
    base = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    view = base[:, ::2]
    assert np.array_equal(np.asarray(load_image(view)), view)


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        (np.zeros((4, 4), np.int64), "unsupported dtype int64"),
        (np.zeros((4, 4, 2), np.uint8), "expected shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "expected shape"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (np.full((4, 4), 255.0), "must lie in [0, 1], got [255, 255]"),
        (np.array([[0.0, np.nan]]), "NaN or infinite"),
    ],
)
def test_numpy_bad_arrays(array: np.ndarray, fragment: str) -> None:
    with pytest.raises(ImageError, match="numpy array") as info:
        load_image(array)
    assert fragment in str(info.value)


# --------------------------------------------------------------------------- sources


def test_all_source_kinds_agree(tmp_path: Path) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    data = encode(img, "PNG")
    path = tmp_path / "img.png"
    path.write_bytes(data)
    with open(path, "rb") as fh:
        from_file = load_image(fh)
        assert not fh.closed  # the caller's file object is left to the caller
    sources = [str(path), path, data, bytearray(data), memoryview(data), io.BytesIO(data), img]
    for out in [from_file, *(load_image(src) for src in sources)]:
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(img))


def test_unsupported_source_type() -> None:
    with pytest.raises(TypeError, match="int"):
        load_image(42)  # type: ignore[arg-type]


def test_text_mode_file_object_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"abc")
    with open(path) as fh, pytest.raises(ImageError, match="'a.png': the file object must be opened in binary"):
        load_image(fh)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- EXIF and animation


def _exif_jpeg(orientation: int) -> bytes:
    """64x32 JPEG, left half red, right half blue, with an EXIF Orientation tag."""
    img = Image.new("RGB", (64, 32), RED)
    img.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def _near(px: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(px, colour)) <= 12


@pytest.mark.parametrize(("orientation", "top", "bottom"), [(6, RED, BLUE), (8, BLUE, RED)])
def test_exif_rotation(orientation: int, top, bottom) -> None:
    out = load_image(_exif_jpeg(orientation))
    assert out.size == (32, 64)  # rotated to portrait
    assert _near(out.getpixel((16, 8)), top) and _near(out.getpixel((16, 56)), bottom)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_exif_transpose(orientation: int) -> None:
    data = _exif_jpeg(orientation)
    with Image.open(io.BytesIO(data)) as im:
        expected = ImageOps.exif_transpose(im).convert("RGB")
    assert np.array_equal(np.asarray(load_image(data)), np.asarray(expected))


# EXIF block (orientation 6) on which ImageOps.exif_transpose raises struct.error when re-writing it.
CORRUPT_EXIF = bytes.fromhex(
    "4578696600004d4d002a0000000800a80141000200000006000000320112000300000001000600008769"
    "000400000001000000380000000043616e6f6efc000190030002000000140000004a000000a132303230"
    "3a30313a30312030303a30303a303000"
)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_exif_still_rotates() -> None:
    data = encode(Image.new("RGB", (16, 8), RED), "JPEG", exif=CORRUPT_EXIF)
    assert load_image(data).size == (8, 16)
    for garbage in (b"Exif\x00\x00garbage", b"\x00" * 30):
        assert load_image(encode(Image.new("RGB", (16, 8), RED), "JPEG", exif=garbage)).size == (16, 8)


def _frames() -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]


def test_animated_gif_uses_first_frame() -> None:
    first, *rest = _frames()
    data = encode(first, "GIF", save_all=True, append_images=rest, duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert set(pixels(load_image(data))) == {RED}


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_animated_webp_uses_first_frame() -> None:
    first, *rest = _frames()
    data = encode(first, "WEBP", save_all=True, append_images=rest, duration=50, lossless=True)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    assert set(pixels(load_image(data))) == {RED}


# --------------------------------------------------------------------------- bad inputs


def _valid(fmt: str) -> bytes:
    rng = np.random.default_rng(1)
    return encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)


BAD_FILES = {
    "empty.png": (b"", "the file is empty"),
    "half.png": (_valid("PNG")[: len(_valid("PNG")) // 2], "truncated or corrupt"),
    "header.png": (_valid("PNG")[:40], "truncated or corrupt"),
    "half.jpg": (_valid("JPEG")[: len(_valid("JPEG")) // 2], "truncated or corrupt"),
    "header.jpg": (_valid("JPEG")[:40], "truncated or corrupt"),
    "text.png": (b"this is not an image, just some text\n" * 4, "not a supported image format"),
    "doc.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "not a supported image format"),
    "bomb.png": (png_header(50_000, 50_000), "too large"),
    "big.png": (png_header(8_000, 8_000), "too large (8000x8000 = 64.0 megapixels, the limit is 40.0)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_files_raise_clear_errors(tmp_path: Path, name: str) -> None:
    data, fragment = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    for src, label in ((path, f"'{name}'"), (data, "(in-memory bytes)")):
        with pytest.raises(ImageError) as info:
            load_image(src)
        message = str(info.value)
        assert message.startswith(f"cannot read image {label}: ") and fragment in message
        assert str(tmp_path) not in message and "\n" not in message


def test_missing_path_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^cannot read image 'nope\.png': the file does not exist$"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match=r"^cannot read image '[^']+': it is a directory, not a file$"):
        load_image(tmp_path)


def test_image_error_is_value_error() -> None:
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ValueError):
        load_image(b"")


def test_size_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self):  # pragma: no cover - must not run
        raise AssertionError("decoded an over-limit image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError, match="too large"):
        load_image(png_header(8_000, 8_000))
    assert 8_000 * 8_000 > DEFAULT_MAX_PIXELS


def test_max_pixels_applies_to_every_source() -> None:
    img = Image.new("RGB", (20, 10))
    for src in (encode(img, "PNG"), img, np.zeros((10, 20, 3), np.uint8)):
        with pytest.raises(ImageError, match=r"too large \(20x10 = 0.0 megapixels"):
            load_image(src, max_pixels=199)
        assert load_image(src, max_pixels=200).size == (20, 10)
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(img, max_pixels=0)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_no_file_handles_left_open(tmp_path: Path) -> None:
    first, *rest = _frames()
    files = {
        "ok.png": _valid("PNG"),
        "anim.gif": encode(first, "GIF", save_all=True, append_images=rest),
        "exif.jpg": _exif_jpeg(6),
        **{name: data for name, (data, _) in BAD_FILES.items()},
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for name in files:
            try:
                load_image(tmp_path / name)
            except ImageError:
                pass
    assert len(os.listdir("/proc/self/fd")) == before


# --------------------------------------------------------------------------- size rules


sizes = st.integers(1, 6000)
multiples = st.sampled_from([1, 2, 8, 14, 16, 64])


@settings(max_examples=300, deadline=None)
@given(w=sizes, h=sizes, multiple=multiples, max_side=st.none() | st.integers(64, 4096))
def test_fit_size_properties(w: int, h: int, multiple: int, max_side: int | None) -> None:
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        with pytest.raises(ImageError, match="aspect ratio"):
            fit_size((w, h), multiple=multiple, max_side=max_side)
        return
    tw, th = fit_size((w, h), multiple=multiple, max_side=max_side)
    assert tw % multiple == 0 and th % multiple == 0 and tw >= multiple and th >= multiple
    if max_side is not None:
        assert max(tw, th) <= max_side
    scale = 1.0 if max_side is None else min(1.0, max_side / max(w, h))
    for target, ideal in ((tw, w * scale), (th, h * scale)):
        # nearest multiple; at most one multiple off where a floor/cap clamps it
        limit = multiple / 2 if target > multiple and (max_side is None or target < max_side // multiple * multiple) else multiple
        assert abs(target - ideal) <= limit + 1e-9


@settings(max_examples=200, deadline=None)
@given(w=sizes, h=sizes, min_side=st.integers(1, 512), extra=st.integers(0, 4096), multiple=multiples)
def test_fit_size_min_and_max_side(w: int, h: int, min_side: int, extra: int, multiple: int) -> None:
    max_side = -(-min_side // multiple) * multiple + extra
    try:
        tw, th = fit_size((w, h), multiple=multiple, min_side=min_side, max_side=max_side)
    except ImageError as exc:
        # only refused when elongated beyond the limit or beyond what the two limits allow
        assert max(w, h) / min(w, h) > min(MAX_ASPECT_RATIO, max_side / min_side), str(exc)
        return
    assert min_side <= min(tw, th) and max(tw, th) <= max_side


def test_fit_to_multiple_resizes_pixels() -> None:
    img = Image.new("RGB", (1000, 750), RED)
    out = fit_to_multiple(img, max_side=512)
    assert out.size == (512, 384) and out.mode == "RGB" and set(pixels(out)) == {RED}
    assert fit_to_multiple(Image.new("RGB", (100, 70))).size == (96, 72)
    assert fit_to_multiple(Image.new("RGB", (3, 3))).size == (8, 8)  # at least one multiple
    assert fit_to_multiple(Image.new("RGB", (100, 50)), min_side=256).size == (512, 256)
    assert fit_to_multiple(Image.new("RGB", (1020, 100)), max_side=1020).size == (1016, 96)  # capped


def test_elongated_images_refused_clearly() -> None:
    with pytest.raises(ImageError) as info:
        fit_to_multiple(Image.new("RGB", (20000, 20)), max_side=1024)
    assert str(info.value) == (
        "cannot fit a 20000x20 image: its aspect ratio (1000:1) is more extreme than the supported 16:1"
    )
    with pytest.raises(ImageError, match="shorter side under one pixel"):
        fit_size((160, 10), max_side=8)
    with pytest.raises(ImageError, match="needs a longer side above 1024"):
        fit_size((1600, 100), max_side=1024, min_side=256)


@pytest.mark.parametrize(
    "kwargs",
    [{"multiple": 0}, {"max_side": 4}, {"min_side": 0}, {"min_side": 100, "max_side": 99}, {"min_side": 97, "max_side": 100}],
)
def test_fit_size_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        fit_size((100, 100), **kwargs)


def test_resize_to_and_center_crop() -> None:
    img = Image.fromarray(np.arange(21 * 37 * 3, dtype=np.uint32).reshape(21, 37, 3).astype(np.uint8))
    crop = center_crop_to_multiple(img, 8)
    assert crop.size == (32, 16)
    assert np.array_equal(np.asarray(crop), np.asarray(img)[2:18, 2:34])
    assert center_crop_to_multiple(crop, 8) is not crop
    with pytest.raises(ImageError, match="too small"):
        center_crop_to_multiple(Image.new("RGB", (7, 64)), 8)
    same = resize_to(img, (37, 21))
    assert same is not img and np.array_equal(np.asarray(same), np.asarray(img))
    assert resize_to(img, (100, 5)).size == (100, 5)
    with pytest.raises(ValueError):
        resize_to(img, (0, 5))


def test_restore_aspect() -> None:
    out = Image.new("RGB", (512, 384), BLUE)
    assert restore_aspect(out, (1001, 750)).size == (1001, 750)
    assert restore_aspect(out, (4000, 3000), max_side=1024).size == (1024, 768)
    assert restore_aspect(out, (300, 200), max_side=1024).size == (300, 200)


# --------------------------------------------------------------------------- tensors


@pytest.fixture(scope="module")
def vae_processor():
    image_processor = pytest.importorskip("diffusers.image_processor")
    return image_processor.VaeImageProcessor(vae_scale_factor=8)


def _random_rgb(w: int = 48, h: int = 32, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_to_tensor_matches_diffusers(vae_processor) -> None:
    for seed, (w, h) in enumerate([(48, 32), (8, 8), (64, 128)]):
        img = _random_rgb(w, h, seed)
        ours = to_tensor(img)
        theirs = vae_processor.preprocess(img)
        assert ours.shape == (1, 3, h, w) and ours.dtype == torch.float32 and ours.is_contiguous()
        assert torch.equal(ours, theirs)
        assert ours.min() >= -1 and ours.max() <= 1


def test_to_pil_matches_diffusers(vae_processor) -> None:
    gen = torch.Generator().manual_seed(0)
    ks = torch.arange(256, dtype=torch.float32)
    edges = torch.cat([(ks + 0.5) / 255 * 2 - 1, ks / 255 * 2 - 1])  # half-way and exact levels
    t = torch.cat([edges, torch.randn(3 * 32 * 40 - edges.numel(), generator=gen) * 1.5]).reshape(1, 3, 32, 40)
    expected = np.asarray(vae_processor.postprocess(t, output_type="pil")[0])
    assert np.array_equal(np.asarray(to_pil(t)), expected)
    assert np.array_equal(np.asarray(to_pil(t[0])), expected)
    np.testing.assert_array_equal(to_numpy01(t), vae_processor.postprocess(t, output_type="np")[0])


def test_tensor_round_trip_is_exact() -> None:
    img = _random_rgb()
    assert np.array_equal(np.asarray(to_pil(to_tensor(img))), np.asarray(img))
    np.testing.assert_allclose(to_numpy01(to_tensor(img)), to_numpy01(img), atol=1e-6)
    assert to_numpy01(img).shape == (32, 48, 3) and to_numpy01(img).dtype == np.float32


def test_tensor_conversion_options_and_errors() -> None:
    img = _random_rgb()
    assert to_tensor(img, dtype=torch.float16).dtype == torch.float16
    assert torch.equal(to_tensor(img.convert("RGBA")), to_tensor(img))
    assert to_pil(to_tensor(img, dtype=torch.bfloat16)).size == img.size
    assert pixels(to_pil(torch.full((3, 1, 2), 5.0))) == [WHITE, WHITE]  # clamped
    for shape in [(2, 3, 4, 4), (4, 4), (1, 4, 4, 4)]:
        with pytest.raises(ValueError, match="expected a tensor of shape"):
            to_pil(torch.zeros(shape))
    with pytest.raises(ImageError, match="NaN"):
        to_pil(torch.full((3, 2, 2), float("nan")))


# --------------------------------------------------------------------------- saving


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    img = _random_rgb()
    path = save_image(img, tmp_path / "a" / "b" / "out.png")
    assert path == tmp_path / "a" / "b" / "out.png"
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(img))
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]  # no temp file left
    save_image(img, str(path))  # overwrite
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(img))


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".JPEG", "JPEG"), (".webp", "WEBP"), (".bmp", "BMP"), (".tiff", "TIFF")])
def test_save_chooses_format_from_suffix(tmp_path: Path, suffix: str, fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    path = save_image(Image.new("RGB", (8, 8), RED), tmp_path / f"x{suffix}")
    with Image.open(path) as saved:
        assert saved.format == fmt


def test_save_jpeg_flattens_alpha_onto_white(tmp_path: Path) -> None:
    path = save_image(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), tmp_path / "x.jpg")
    assert all(_near(px, WHITE) for px in pixels(load_image(path)))


def test_save_refuses_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"^cannot save image 'x\.xyz': unsupported file extension '\.xyz'"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "x.xyz")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"previous content")

    def failing_save(self, fp, format=None, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(ImageError, match=r"^cannot save image 'out\.png' in folder '.+': no space left on device$"):
        save_image(Image.new("RGB", (8, 8)), target)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]

    def interrupted_save(self, fp, format=None, **kwargs):
        fp.write(b"\x89PNG partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "new.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_save_into_unusable_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ImageError, match="part of the folder path is a file, not a folder"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "file" / "sub" / "x.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "dir.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file"]


def test_save_into_unwritable_folder_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(images.os, "open", refuse)
    with pytest.raises(ImageError, match=r"^cannot save image 'x\.png' in folder '.+': permission denied$"):
        save_image(Image.new("RGB", (8, 8)), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_save_into_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            save_image(Image.new("RGB", (8, 8)), folder / "x.png")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_module_has_no_gradio_dependency() -> None:
    assert "gradio" not in Path(images.__file__).read_text()
