"""The colour core every colouriser shares: float CIELAB (or YUV), the luma lock, desaturation.

Images here are numpy arrays, RGB ``H x W x 3`` in [0, 1] (uint8 is accepted and scaled); CIELAB is
skimage's (D65, L in [0, 100], a/b roughly in [-110, 110]), in float64, never cv2's quantised uint8 Lab.

``recombine(original, ab, colorfulness)`` is the one way a colouriser's output becomes an image: the
luminance (L) comes from ``original`` at its FULL size, the chroma (ab) from the model, upsampled to that
size (never L), scaled by ``colorfulness``, and brought into the sRGB gamut by shrinking each
out-of-gamut pixel's chroma towards grey (bisection on the chroma scale). A neutral colour of any
L in [0, 100] lies in gamut, so the L of the result equals the L of ``original``: the luma lock is
exact up to the float round trip: |L_out - L_in| is below 1e-3 L units in float64 (measured: 4e-8 on
chelsea, at most 3e-4 on the held-out photos, at pure whites where skimage's D65 grey rounds to RGB
1 + 1e-6 and is clipped); saving as an 8-bit PNG adds the quantisation (up to ~0.3 L units). ``space="yuv"`` does the same with BT.601 Y and UV (the ldm
colourisation demos' Y swap).

Model-side scaling of the pix2pix colouriser (junyanz/pytorch-CycleGAN-and-pix2pix ``ColorizationModel``):
``L / 50 - 1`` in, ``ab / 110`` out (``scale_l``, ``scale_ab`` and their inverses).
"""

from __future__ import annotations

import warnings

import numpy as np
from skimage import color
from skimage.transform import resize

SPACES = ("lab", "yuv")
L_SCALE, L_SHIFT, AB_SCALE = 50.0, 1.0, 110.0
_BISECTION_STEPS = 20  # chroma scale resolved to 2 ** -20
_GAMUT_EPS = 1e-9


def as_float_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` (H x W x 3, uint8 or float in [0, 1]) as float64 in [0, 1]."""
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    return np.clip(a.astype(np.float64), 0.0, 1.0)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB -> CIELAB (float64, D65)."""
    return color.rgb2lab(as_float_rgb(rgb))


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB -> sRGB in [0, 1], clipped per channel (use ``recombine`` to keep L exact)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about the negative Z values it clips
        return np.clip(color.lab2rgb(lab), 0.0, 1.0)


def _to_luma_chroma(rgb: np.ndarray, space: str) -> np.ndarray:
    return rgb_to_lab(rgb) if space == "lab" else color.rgb2yuv(as_float_rgb(rgb))


def _from_luma_chroma(x: np.ndarray, space: str) -> np.ndarray:
    """Unclipped RGB of a Lab / YUV array (may leave [0, 1]: out of gamut)."""
    if space == "lab":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            xyz = color.lab2xyz(x)
        # skimage's lab2rgb clips in XYZ and in RGB; here the raw linear values decide the gamut
        lin = xyz @ np.asarray(color.colorconv.rgb_from_xyz, dtype=np.float64).T
        return np.where(lin > 0.0031308, 1.055 * np.abs(lin) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return color.yuv2rgb(x)


def luminance(rgb: np.ndarray, space: str = "lab") -> np.ndarray:
    """The luma channel of ``rgb``: CIELAB L (0..100) or BT.601 Y (0..1)."""
    _check_space(space)
    return _to_luma_chroma(rgb, space)[..., 0]


def chroma(rgb: np.ndarray, space: str = "lab") -> np.ndarray:
    """The chroma channels of ``rgb`` (H x W x 2): CIELAB ab or YUV UV."""
    _check_space(space)
    return _to_luma_chroma(rgb, space)[..., 1:]


def to_grey(rgb: np.ndarray, space: str = "lab") -> np.ndarray:
    """Desaturate: the neutral grey with the same L (or Y) as ``rgb``, as RGB in [0, 1]."""
    _check_space(space)
    x = _to_luma_chroma(rgb, space)
    x[..., 1:] = 0.0
    return np.clip(_from_luma_chroma(x, space), 0.0, 1.0)


def is_grey(rgb: np.ndarray, tolerance: float = 2.0) -> bool:
    """Whether ``rgb`` carries no colour: its mean CIELAB chroma is below ``tolerance``."""
    ab = chroma(rgb)
    return float(np.hypot(ab[..., 0], ab[..., 1]).mean()) < tolerance


def resize_chroma(ab: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``ab`` (h x w x 2) resized bilinearly to ``size`` = (H, W) (anti-aliased when shrinking)."""
    ab = np.asarray(ab, dtype=np.float64)
    if ab.shape[:2] == tuple(size):
        return ab
    shrink = ab.shape[0] > size[0] or ab.shape[1] > size[1]
    return resize(ab, (*size, ab.shape[-1]), order=1, mode="edge", anti_aliasing=shrink, preserve_range=True)


def _in_gamut(rgb: np.ndarray) -> np.ndarray:
    return np.all((rgb >= -_GAMUT_EPS) & (rgb <= 1.0 + _GAMUT_EPS), axis=-1)


def gamut_map(x: np.ndarray, space: str = "lab") -> tuple[np.ndarray, np.ndarray]:
    """Shrink the chroma of out-of-gamut pixels of ``x`` (Lab or YUV) until they fit sRGB.

    Luma untouched, hue kept; returns (RGB in [0, 1], the chroma scale applied per pixel).
    """
    x = np.array(x, dtype=np.float64)
    scale = np.ones(x.shape[:-1])
    rgb = _from_luma_chroma(x, space)
    out = ~_in_gamut(rgb)
    if out.any():
        pix = x[out]
        lo, hi = np.zeros(len(pix)), np.ones(len(pix))
        for _ in range(_BISECTION_STEPS):
            mid = (lo + hi) / 2
            trial = np.concatenate([pix[:, :1], pix[:, 1:] * mid[:, None]], axis=-1)
            ok = _in_gamut(_from_luma_chroma(trial[:, None, :], space)[:, 0])
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        scale[out] = lo
        x[out] = np.concatenate([pix[:, :1], pix[:, 1:] * lo[:, None]], axis=-1)
        rgb[out] = _from_luma_chroma(x[out][:, None, :], space)[:, 0]
    return np.clip(rgb, 0.0, 1.0), scale


def recombine(original_rgb: np.ndarray, ab_pred: np.ndarray, colorfulness: float = 1.0,
              space: str = "lab") -> np.ndarray:
    """Colour ``original_rgb`` (H x W x 3, any size) with the model's chroma ``ab_pred`` (h x w x 2).

    L (or Y) from ``original_rgb`` at full size; chroma ``ab_pred`` (CIELAB ab, or UV for ``space="yuv"``)
    resized to H x W, times ``colorfulness`` (0 = grey, 1 = the model's colours, > 1 more vivid), then
    gamut-mapped by chroma reduction. Returns RGB float64 in [0, 1] whose L equals the input's.
    """
    _check_space(space)
    colorfulness = float(colorfulness)
    if not np.isfinite(colorfulness) or colorfulness < 0:
        raise ValueError(f"colorfulness must be a finite number >= 0, got {colorfulness}")
    x = _to_luma_chroma(original_rgb, space)
    ab = np.asarray(ab_pred, dtype=np.float64)
    if ab.ndim != 3 or ab.shape[-1] != 2:
        raise ValueError(f"expected chroma of shape h x w x 2, got {ab.shape}")
    x[..., 1:] = resize_chroma(ab, x.shape[:2]) * colorfulness
    return gamut_map(x, space)[0]


def lab_lock_error(original_rgb: np.ndarray, output_rgb: np.ndarray, space: str = "lab") -> float:
    """max |luma(output) - luma(original)|: how far a result is from the luma lock (0 = exact)."""
    return float(np.abs(luminance(output_rgb, space) - luminance(original_rgb, space)).max())


# ---- model-side scaling (pix2pix ColorizationModel) --------------------------------------------------
def scale_l(L: np.ndarray) -> np.ndarray:
    """CIELAB L (0..100) -> the network's input, in [-1, 1]."""
    return L / L_SCALE - L_SHIFT


def scale_ab(ab: np.ndarray) -> np.ndarray:
    """CIELAB ab -> the network's target, about [-1, 1]."""
    return ab / AB_SCALE


def unscale_ab(ab: np.ndarray) -> np.ndarray:
    """The network's output -> CIELAB ab."""
    return ab * AB_SCALE


def lab_channels(rgb: np.ndarray) -> np.ndarray:
    """RGB (H x W x 3) -> (3, H, W) float32 network channels: scaled L, then scaled a, b."""
    lab = rgb_to_lab(rgb)
    return np.concatenate([scale_l(lab[..., :1]), scale_ab(lab[..., 1:])], axis=-1).transpose(2, 0, 1).astype(
        np.float32)


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"unknown colour space {space!r}; choose one of {', '.join(SPACES)}")
