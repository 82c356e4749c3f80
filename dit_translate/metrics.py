"""Image metrics shared by the CLI, the app, evaluation and the tests.

Images are (1, 3, H, W) or (3, H, W) tensors in [-1, 1]. SSIM follows the correction paper's
protocol: ``skimage.metrics.structural_similarity`` on grayscale images in [0, 1]. LPIPS, CLIP image
similarity and FID/KID need network weights: LPIPS reads them from local files only, the others take
a caller-chosen feature extractor (offline tests use random ones: plumbing checks, not scores).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity


def _gray(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    if x.dim() == 4:
        x = x[0]
    return rgb2gray((x.clamp(-1, 1) / 2 + 0.5).permute(1, 2, 0).numpy())


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Grayscale SSIM in [-1, 1] (1 = identical) of two same-size images in [-1, 1]."""
    if a.shape[-2:] != b.shape[-2:]:
        raise ValueError(f"ssim needs images of one size, got {tuple(a.shape[-2:])} and {tuple(b.shape[-2:])}")
    ga, gb = _gray(a), _gray(b)
    win = min(7, *ga.shape)
    win -= 1 - win % 2  # SSIM needs an odd window no larger than the image
    if win < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got {ga.shape[1]}x{ga.shape[0]}")
    return float(structural_similarity(ga, gb, data_range=1.0, win_size=win))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two same-size images in [-1, 1], measured on [0, 1] (inf when identical)."""
    mse = ((a.float().clamp(-1, 1) - b.float().clamp(-1, 1)) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


# ---- learned and distribution metrics (weights never downloaded here) --------------------------

LPIPS_BACKBONES = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights")}
"""LPIPS trunk -> (torchvision constructor, weights enum) of its ImageNet backbone."""


def lpips_backbone_file(net: str = "alex", path: str = "") -> Path:
    """Where LPIPS's backbone weights are read from: ``path``, else torchvision's file in the torch hub cache."""
    if path:
        return Path(path)
    import torchvision

    url = getattr(torchvision.models, LPIPS_BACKBONES[net][1]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_lpips(net: str = "alex", backbone: str = "") -> torch.nn.Module:
    """A frozen LPIPS v0.1 model (``model(a, b)`` -> (B, 1, 1, 1) distances of images in [-1, 1]).

    The linear heads ship with the lpips wheel; the torchvision backbone is read from ``backbone`` (a
    ``.pth``/``.safetensors`` file) or the torch hub cache, never downloaded: a missing file raises
    ``FileNotFoundError`` saying how to get it.
    """
    import lpips

    if net not in LPIPS_BACKBONES:
        raise ValueError(f"unknown LPIPS network {net!r}; choose one of {sorted(LPIPS_BACKBONES)}")
    file = lpips_backbone_file(net, backbone)
    if not file.is_file():
        constructor = LPIPS_BACKBONES[net][0]
        raise FileNotFoundError(
            f"LPIPS ({net}) needs its torchvision backbone weights at {file}, which is missing: run "
            f"`python -c \"import torchvision; torchvision.models.{constructor}(weights='IMAGENET1K_V1')\"` "
            "where the network is available (it fills the torch hub cache), or name a local copy of the file"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation notice
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    trunk = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    # lpips splits torchvision's `features` into slices that keep the layer indices: sliceK.<i>.weight
    model.net.load_state_dict({k: trunk[k.split(".", 1)[1]] for k in model.net.state_dict()})
    return model.eval().requires_grad_(False)


@torch.no_grad()
def lpips_distance(a: torch.Tensor, b: torch.Tensor, model: torch.nn.Module) -> float:
    """Mean LPIPS distance (0 = identical, larger = more different) of two same-size batches in [-1, 1]."""
    device = next(model.parameters()).device
    return float(model(a.float().to(device), b.float().to(device)).mean())


@torch.no_grad()
def clip_image_similarity(a: torch.Tensor, b: torch.Tensor, embed) -> float:
    """Mean cosine similarity in [-1, 1] of CLIP image embeddings; ``embed``: images in [-1, 1] -> unit-norm (B, D)."""
    return float((embed(a) * embed(b)).sum(-1).mean())


@torch.no_grad()
def clip_text_score(images: torch.Tensor, text: str, clip) -> list[float]:
    """Per image, the cosine in [-1, 1] of its CLIP image embedding with the embedding of ``text``.

    CLIPScore without its 100x scale and clipping at 0. ``images``: (B, 3, H, W) in [-1, 1];
    ``clip``: an encoder with ``embed_image`` (images in [-1, 1] -> unit-norm (B, D)) and
    ``embed_text`` (texts -> unit-norm (N, D)), e.g. ``encoders.ClipEncoder``.
    """
    return (clip.embed_image(images) @ clip.embed_text([text])[0]).tolist()


@torch.no_grad()
def clip_direction_score(images: torch.Tensor, source: torch.Tensor, text: str, source_text: str, clip) -> list[float]:
    """Per image, the directional CLIP similarity ``cos(E_I(image) - E_I(source), E_T(text) - E_T(source_text))``.

    In [-1, 1]; 0 for an image equal to the source. ``source``: (1, 3, H, W) in [-1, 1]; ``clip`` as
    for ``clip_text_score``.
    """
    image_change = clip.embed_image(images) - clip.embed_image(source)
    target, origin = clip.embed_text([text, source_text])
    return torch.nn.functional.cosine_similarity(image_change, (target - origin)[None], dim=-1).tolist()


def fid_kid(real: np.ndarray, fake: np.ndarray, *, kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
    """Frechet and kernel (KID, unbiased) distances of two (N, D) feature sets, via clean-fid's formulas.

    The features come from a chosen extractor (clean-fid/torchmetrics style); both are NaN with fewer
    than 2 samples per set. KID's random subsets use a private RNG seeded with ``seed``.
    """
    from cleanfid.fid import frechet_distance, kernel_distance

    if min(len(real), len(fake)) < 2:
        return {"fid": float("nan"), "kid": float("nan")}
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    with contextlib.redirect_stdout(sys.stderr):  # clean-fid prints its singular-covariance notice
        fid = frechet_distance(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        kid = kernel_distance(real, fake, num_subsets=kid_subsets)
    finally:
        np.random.set_state(state)
    return {"fid": float(fid), "kid": float(kid)}


# ---- colourisation metrics (RGB numpy arrays H x W x 3, uint8 or float in [0, 1]) -----------------
# After a luma swap, grey-SSIM and L-PSNR are perfect by construction: they say nothing about colour
# and are never reported as colourisation quality.

AB_PEAK = 220.0
"""Peak-to-peak range of CIELAB a/b used by ``ab_psnr`` ([-110, 110], the pix2pix colouriser's scale)."""


def _rgb01(image) -> np.ndarray:
    from dit_translate.colour import as_float_rgb

    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        x = x[0] if x.dim() == 4 else x
        image = (x.clamp(-1, 1) / 2 + 0.5).permute(1, 2, 0).numpy()
    return as_float_rgb(image)


def _same_size(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what} needs images of one size, got {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")


def ciede2000(pred, truth) -> float:
    """Mean CIEDE2000 colour difference (``skimage.color.deltaE_ciede2000``) of two same-size RGB images."""
    from dit_translate.colour import rgb_to_lab
    from skimage.color import deltaE_ciede2000

    a, b = _rgb01(pred), _rgb01(truth)
    _same_size(a, b, "CIEDE2000")
    return float(deltaE_ciede2000(rgb_to_lab(a), rgb_to_lab(b)).mean())


def colourfulness(image) -> float:
    """Hasler & Suesstrunk (2003) colourfulness on 0..255 RGB: ``sqrt(std_rg^2 + std_yb^2) + 0.3 *
    sqrt(mean_rg^2 + mean_yb^2)``, ``rg = R - G``, ``yb = (R + G) / 2 - B``; 0 for a grey image."""
    x = _rgb01(image) * 255.0
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def ab_psnr(pred, truth) -> float:
    """PSNR in dB of the CIELAB a/b channels of two same-size RGB images, peak ``AB_PEAK`` (inf when equal)."""
    from dit_translate.colour import chroma

    a, b = _rgb01(pred), _rgb01(truth)
    _same_size(a, b, "ab-PSNR")
    mse = float(((chroma(a) - chroma(b)) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(AB_PEAK**2 / mse))


def colour_metrics(output, truth=None, grey=None) -> dict[str, float]:
    """The colourisation numbers of ``output``: its colourfulness, and with the true colours ``truth`` its
    CIEDE2000, ab-PSNR and colourfulness gap to the truth; with ``grey`` (the desaturated input) the same
    numbers for the grey photo itself, as ``grey_*`` (the baseline a colouriser must beat)."""
    out: dict[str, float] = {"colourfulness": colourfulness(output)}
    if truth is not None:
        out["truth_colourfulness"] = colourfulness(truth)
        out["ciede2000"] = ciede2000(output, truth)
        out["ab_psnr"] = ab_psnr(output, truth)
        out["colourfulness_gap"] = out["colourfulness"] - out["truth_colourfulness"]
    if grey is not None:
        out["grey_colourfulness"] = colourfulness(grey)
        if truth is not None:
            out["grey_ciede2000"] = ciede2000(grey, truth)
            out["grey_ab_psnr"] = ab_psnr(grey, truth)
    return out
