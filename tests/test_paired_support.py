"""Shared helpers for the paired-translation tests: toy pairs, a tiny random CLIP and tiny presets.

Imported by the other ``test_paired_*`` modules (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}
"""A 0.03 M-parameter open_clip config (random weights): conditioning plumbing, not semantics."""

COLORS = [(230, 40, 40), (40, 200, 60), (40, 80, 230), (230, 210, 40), (200, 60, 200), (60, 200, 200)]


def toy_pair(i: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Pair ``i``: a coloured background with a white square (source) and its colour negative shifted
    right by a quarter of the width (target); uint8 (size, size, 3)."""
    a = np.empty((size, size, 3), np.uint8)
    a[:] = COLORS[i % len(COLORS)]
    x, y = (2 + 7 * i) % (size // 2), (2 + 11 * i) % (size // 2)
    a[y:y + size // 3, x:x + size // 3] = 255
    return a, np.roll(255 - a, size // 4, axis=1)


def random_lpips_backbone(path: Path) -> Path:
    """A random AlexNet trunk (``features.*``) as safetensors: LPIPS plumbing for tests, distances mean nothing."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    with torch.random.fork_rng():
        torch.manual_seed(0)
        trunk = {k: v.contiguous() for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    save_file(trunk, str(path))
    return path


@pytest.fixture(scope="session")
def lpips_backbone(tmp_path_factory) -> Path:
    return random_lpips_backbone(tmp_path_factory.mktemp("lpips") / "alexnet.safetensors")


def write_ab_pairs(folder: Path, n: int, size: int = 32, names: list[str] | None = None) -> Path:
    """Write ``n`` toy pairs as pix2pix AB images (A | B side by side) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a, b = toy_pair(i, size)
        name = names[i] if names else f"p{i}"
        Image.fromarray(np.concatenate([a, b], axis=1)).save(folder / f"{name}.png")
    return folder


def write_preset(path: Path, clip: Path, *, size: int = 32, **tables: dict) -> Path:
    """A tiny pixel-space DiT preset at ``path``; ``tables`` update its TOML tables (e.g. ``train={...}``)."""
    base = {
        "dit": {"size": "tiny", "patch": 4, "hidden_size": 32, "depth": 2, "num_heads": 2},
        "encoders": {"clip": f"local-dir:{clip}"},
        "data": {"val_fraction": 0.3, "flip": True},
        "train": {"steps": 100, "batch_size": 2, "save_every": 100, "sample_every": 100, "log_every": 1,
                  "num_workers": 0, "sample_steps": 2, "lambda_clip": 0.1, "lambda_lpips": 0.0},
        "defaults": {"steps": 4, "guidance": 2.0},
    }
    for name, values in tables.items():
        base[name] = {**base.get(name, {}), **values}
    lines = [f'name = "{path.stem}"', 'kind = "dit"', 'model = "./checkpoint"', f"size = {size}"]
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else repr(value)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """An open_clip local-dir folder with a tiny random CLIP."""
    from dit_translate.untrained import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("clip") / "clip", seed=0, config=TINY_CLIP)


@pytest.fixture(scope="session")
def ab_data(tmp_path_factory) -> Path:
    """Six toy AB pairs (32 x 32 halves)."""
    return write_ab_pairs(tmp_path_factory.mktemp("ab") / "data", 6)


def test_toy_pairs_differ_from_their_sources():
    a, b = toy_pair(0)
    assert a.shape == b.shape == (32, 32, 3) and np.abs(a.astype(int) - b).mean() > 100
