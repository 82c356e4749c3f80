"""Device, dtype, seeding and offline detection: the few process-wide runtime choices."""

from __future__ import annotations

import gc
import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The device to run on: ``prefer`` if given ("cpu", "cuda", "cuda:1", "mps"), else cuda > mps > cpu."""
    if prefer:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} was requested but CUDA is not available on this machine")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {prefer!r} was requested but MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, prefer: str | None = None) -> torch.dtype:
    """Weights dtype: ``prefer`` ("float32", "float16", "bfloat16") if given, else fp16 on CUDA, fp32 elsewhere."""
    if prefer:
        try:
            dtype = getattr(torch, prefer)
        except AttributeError:
            raise ValueError(f"unknown dtype {prefer!r}; use float32, float16 or bfloat16") from None
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {prefer!r}; use float32, float16 or bfloat16")
        return dtype
    return torch.float16 if device.type == "cuda" else torch.float32


OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
"""Lower-case fragments of the messages torch's allocators raise when memory runs out (CUDA, MPS, CPU)."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocator running out of memory (``torch.OutOfMemoryError``, ``MemoryError``,
    or a ``RuntimeError`` with an allocator's out-of-memory message)."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in OOM_MARKERS)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded with ``seed`` on ``device`` (on the CPU for MPS, which has none that
    ``randn_tensor`` can use); CPU generators give the same numbers on every machine."""
    device = torch.device(device)
    return torch.Generator(device="cpu" if device.type == "mps" else device).manual_seed(int(seed))


def step_generator(seed: int, step: int, process: int = 0) -> torch.Generator:
    """A CPU generator for one training step, so batches and noise depend only on (seed, step, rank)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + process)


def hub_offline() -> bool:
    """True when the Hugging Face Hub must not be contacted (``HF_HUB_OFFLINE`` set to a true value)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def free_memory() -> None:
    """Collect garbage and return cached accelerator memory (after freeing models or an out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
