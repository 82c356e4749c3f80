"""What the benchmarks share: peak-memory sampling, the machine's description, the SD-1.5-size random
pipeline, the example photo at a given size, and writing a result as JSON + Markdown + plot."""

from __future__ import annotations

import ctypes
import datetime
import gc
import json
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import torch
from PIL import Image

from dit_translate import images, sizes
from dit_translate.diffusion.models import DiffusionModels


# ---- measurement ------------------------------------------------------------------------------
def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS baselines are honest."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def memory_method(device: torch.device) -> str:
    """How ``peak_memory`` measures on ``device``."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated over the allocation before the run"
    return "peak process RSS over the pre-run baseline (psutil, sampled every 10 ms by a thread)"


@contextmanager
def peak_memory(device: torch.device, interval: float = 0.01) -> Iterator[Callable[[], int]]:
    """``with peak_memory(dev) as peak: ...; peak()`` gives the peak memory increase in bytes."""
    release_free_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield lambda: torch.cuda.max_memory_allocated(device) - base
        return
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield lambda: peak[0] - base
    finally:
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], proc.memory_info().rss)


# ---- settings -----------------------------------------------------------------------------------
def chelsea(side: int) -> torch.Tensor:
    """scikit-image's public-domain cat photo, centre-cropped square and resized: (1, 3, side, side)."""
    from skimage import data

    img = Image.fromarray(data.chelsea())
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    return images.to_tensor(sizes.resize_to(img.crop((left, top, left + s, top + s)), (side, side)))


def held_out_photos(photos: str | None, n: int) -> dict[str, Image.Image]:
    """The first ``n`` photos the tiny world never trained on: scikit-image's (chelsea, coffee), then the test
    split of the extracted Debian photos in ``photos`` (``python -m dit_translate.tiny photos``), if given."""
    from dit_translate.tiny.data import load_photos

    found = {name: Image.fromarray(img) for name, img in load_photos("test").items()}
    if photos:
        from dit_translate.tiny.photos import load_extracted

        found.update({name: Image.fromarray(img) for name, (img, _) in load_extracted(photos, "test").items()})
    return dict(list(found.items())[:n])


def sd15_size_models(device: torch.device, dtype: torch.dtype, seed: int = 0) -> DiffusionModels:
    """Random weights in Stable Diffusion 1.5's shapes: U-Net (859.5M), x8 VAE, 768-wide CLIP text encoder."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTokenizer

    from dit_translate.tokenizer import write_clip_tokenizer
    from dit_translate.untrained import SD_SCHEDULER, random_text_encoder, random_unet

    torch.manual_seed(seed)
    unet = random_unet(sd15_size=True)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=256,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp))
    return DiffusionModels.from_components(
        unet, DDIMScheduler(**SD_SCHEDULER), vae, random_text_encoder(768), tokenizer,
        device=device, dtype=dtype, name="sd15-size-random",
    )


def machine_info() -> dict[str, Any]:
    """Torch/diffusers versions, device, threads, CPU model, memory and date of this run."""
    import diffusers

    from dit_translate.runtime import pick_device

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = pick_device()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "ram_gb": psutil.virtual_memory().total / 2**30,
    }


def machine_summary(m: dict[str, Any]) -> str:
    """One markdown line describing the machine of ``machine_info()``."""
    return (
        f"{m['date']}; torch {m['torch']}, diffusers {m['diffusers']}; device {m['device']}"
        + (f" ({m['gpu']})" if m.get("gpu") else "")
        + f"; CPU {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch thread(s)"
        + (f" (OMP_NUM_THREADS={m['omp_num_threads']})" if m.get("omp_num_threads") else "")
        + f", {m['ram_gb']:.0f} GB RAM."
    )


def write_results(report: dict[str, Any], out: str | Path, name: str,
                  to_markdown: Callable[[dict[str, Any]], str],
                  to_plot: Callable[[dict[str, Any], Path], None]) -> dict[str, Path]:
    """Write a benchmark's ``name``.json, .md (``to_markdown(report)``) and .png (``to_plot(report, path)``)
    into ``out``; return their paths by extension."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{name}.{ext}" for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["md"].write_text(to_markdown(report))
    to_plot(report, paths["png"])
    return paths
