"""Shared fixtures. The environment is made offline before anything imports huggingface_hub."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package of the checkout

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def random_sd_folder(tmp_path_factory):
    """A randomly initialised Stable-Diffusion-layout pipeline folder (SD block structure, tiny width)."""
    from dit_translate.untrained import build_random_sd

    return build_random_sd(tmp_path_factory.mktemp("random-sd") / "pipe", seed=0)


@pytest.fixture(scope="session")
def models(random_sd_folder):
    from dit_translate.diffusion.models import DiffusionModels

    return DiffusionModels.from_pipeline_folder(random_sd_folder, device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """An UNTRAINED tiny open_clip model (``untrained.build_random_clip``) as a ``ClipEncoder``."""
    import open_clip

    from dit_translate.encoders import ClipEncoder
    from dit_translate.untrained import build_random_clip

    name = f"local-dir:{build_random_clip(tmp_path_factory.mktemp('clip') / 'clip')}"
    return ClipEncoder.from_model(open_clip.create_model(name), open_clip.get_tokenizer(name), "tiny")


@pytest.fixture(scope="session")
def dino(tmp_path_factory):
    """An UNTRAINED tiny timm ViT (``untrained.build_random_dino``) as a ``DinoEncoder``."""
    import timm

    from dit_translate.encoders import DinoEncoder
    from dit_translate.untrained import build_random_dino

    folder = build_random_dino(tmp_path_factory.mktemp("dino") / "dino")
    return DinoEncoder.from_model(timm.create_model(f"local-dir:{folder}", pretrained=True), "tiny")


@pytest.fixture(scope="session")
def photo():
    """A real photo (scikit-image's public-domain astronaut), 32x32, as (1, 3, 32, 32) in [-1, 1]."""
    from skimage import data
    from skimage.transform import resize

    img = resize(data.astronaut(), (32, 32), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() * 2 - 1


@pytest.fixture
def tiny_dit_without_weights(tmp_path):
    """A copy of presets/tiny-dit.toml (its relative paths made absolute) whose checkpoint folder is
    missing, so the store takes the UNTRAINED ``random-dit`` fallback whether or not assets/tiny/dit exists."""
    from pathlib import Path

    presets = Path(__file__).resolve().parents[1] / "presets"
    text = (presets / "tiny-dit.toml").read_text().replace('"../assets/tiny/dit"', f'"{tmp_path / "no-dit"}"')
    text = text.replace('"../', f'"{presets.parent}/').replace('"local-dir:../', f'"local-dir:{presets.parent}/')
    path = tmp_path / "tiny-dit.toml"
    path.write_text(text)
    return path
