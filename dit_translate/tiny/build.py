"""Build the tiny world in stages, each resuming from its checkpoint under ``work``, and export.

``<work>/vae``: stage 1, the VAE (``final/`` when done). ``<work>/vae-decoder``: stage 1b, the same
VAE with its decoder fine-tuned (same latents). ``<work>/sd``: stage 2, text encoder + U-Net.
``export`` turns the latest stage-2 checkpoint (EMA weights by default) and the latest VAE into a
diffusers Stable Diffusion folder, so a usable snapshot exists before training ends. ``<work>/clip``: the tiny
open_clip (``train_clip.py``). ``<work>/pairs`` and ``<work>/dit``: the photo -> comic pairs and the
paired DiT run (``python -m dit_translate train`` on ``presets/tiny-dit.toml``), whose checkpoint
folder is shipped with its encoders shared with the SD folder and the CLIP folder. ``<work>/dino``: the
tiny DINO ViT (``train_dino.py``), whose teacher backbone is shipped in timm's ``local-dir`` layout.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTokenizer

from dit_translate.files import replaced_folder
from dit_translate.tiny.checkpoint import CHECKPOINT_NAME, load_weights
from dit_translate.tiny.data import TinyDataset
from dit_translate.tiny.models import make_sampling_scheduler, make_text_encoder, make_train_scheduler, make_unet
from dit_translate.tiny.train_dino import DINOTrainConfig, export_dino, train_dino
from dit_translate.tiny.train_sd import NoisePrediction, SDTrainConfig, train_sd
from dit_translate.tiny.train_vae import DECODER_STAGE, VAETrainConfig, train_vae
from dit_translate.tokenizer import write_clip_tokenizer


def build_vae(work: str | Path, cfg: VAETrainConfig) -> None:
    """Stage 1: train (or finish) the VAE; writes ``<work>/vae/final``.

    Skipped once stage 2 has a checkpoint: its latents belong to the current VAE.
    """
    if (Path(work) / "sd" / CHECKPOINT_NAME).exists():
        print("vae: stage 2 was trained on the current VAE; not training it further", file=sys.stderr)
        return
    train_vae(Path(work) / "vae", cfg)  # its training images follow from cfg


def build_decoder(work: str | Path, cfg: VAETrainConfig) -> None:
    """Stage 1b: fine-tune the decoder of ``<work>/vae/final`` (encoder frozen), writing
    ``<work>/vae-decoder/final``. Its latents are stage 1's, so stage 2 and the DiT are unaffected."""
    vae = AutoencoderKL.from_pretrained(Path(work) / "vae" / "final", use_safetensors=True)
    train_vae(Path(work) / DECODER_STAGE, cfg, init=vae)


def final_vae(work: str | Path) -> Path:
    """The VAE to ship: stage 1b's when it has run, else stage 1's; for a stage 2 started from an
    exported folder (``SDTrainConfig.init``) without VAE stages of its own, that folder's VAE."""
    work = Path(work)
    for folder in (work / DECODER_STAGE / "final", work / "vae" / "final"):
        if folder.is_dir():
            return folder
    config = work / "sd" / "train_config.json"
    init = json.loads(config.read_text()).get("init", "") if config.exists() else ""
    return Path(init) / "vae" if init else work / "vae" / "final"


def load_tokenizer(work: str | Path) -> CLIPTokenizer:
    """The CLIP tokenizer folder ``<work>/tokenizer`` (written on first use)."""
    folder = Path(work) / "tokenizer"
    if not (folder / "vocab.json").exists():
        write_clip_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(folder)


def build_sd(work: str | Path, cfg: SDTrainConfig, photos: str | Path | None = None) -> None:
    """Stage 2: train (or finish) text encoder + U-Net on the stage-1 VAE's latents (with ``cfg.init``:
    that folder's VAE, whose encoder is stage 1's). ``photos``: the extracted Debian photos' training
    split is added to the scikit-image photos."""
    work = Path(work)
    vae_folder = Path(cfg.init) / "vae" if cfg.init else work / "vae" / "final"
    vae = AutoencoderKL.from_pretrained(vae_folder, use_safetensors=True)
    data = TinyDataset("train", cfg.size, cfg.crops_per_photo, seed=cfg.seed, extra_photos=photos)
    train_sd(work / "sd", cfg, vae, load_tokenizer(work), data)


def build_dit(work: str | Path, preset: str = "tiny-dit", max_steps: int | None = None) -> Path:
    """Write the paired data (once) and train (or resume) the tiny DiT into ``<work>/dit``.

    The preset's encoders must exist: the exported SD folder's VAE and the exported tiny CLIP.
    """
    from dit_translate.paired.train import train
    from dit_translate.presets import load_preset
    from dit_translate.tiny.data import write_pairs

    work = Path(work)
    if not (work / "pairs" / "test").is_dir():
        write_pairs(work / "pairs")
    return train(load_preset(preset), work / "pairs", work / "dit", max_steps=max_steps).out


def build_dino(work: str | Path, cfg: DINOTrainConfig, out: str | Path) -> Path:
    """Train (or resume) the tiny DINO in ``<work>/dino`` and export its teacher backbone to ``out``."""
    train_dino(Path(work) / "dino", cfg)
    return export_dino(Path(work) / "dino", out)


def export_dit(run: str | Path, out: str | Path, vae: str = "../sd/vae", clip: str = "local-dir:../clip") -> Path:
    """Copy the loadable part of the DiT run folder ``run`` to ``out``, sharing the sibling encoders.

    ``vae``/``clip`` are relative to ``out`` (see ``paired.checkpoint.share_encoders``); the training
    state and sample grids stay behind. ``out`` is swapped in whole, never half-written.
    """
    from dit_translate.paired.checkpoint import share_encoders

    run, out = Path(run), Path(out)
    with replaced_folder(out) as tmp:
        shutil.copytree(run, tmp, ignore=shutil.ignore_patterns("train_state*", "samples", "run.json", ".*"))
        share_encoders(tmp, vae, clip)
    return out


def load_stage2(work: str | Path, ema: bool = True) -> tuple[NoisePrediction, int]:
    """Text encoder + U-Net from the latest stage-2 checkpoint (EMA or raw weights), and its step."""
    sd = Path(work) / "sd"
    if not (sd / CHECKPOINT_NAME).exists():
        raise FileNotFoundError(f"no stage-2 checkpoint at {sd / CHECKPOINT_NAME}; run `build` first")
    cfg = json.loads((sd / "train_config.json").read_text())
    module = NoisePrediction(make_unet(**cfg["unet"]), make_text_encoder(**cfg["text"]), make_train_scheduler())
    step = load_weights(sd / CHECKPOINT_NAME, module, ema)
    return module.eval(), step


def export(work: str | Path, out: str | Path, ema: bool = True) -> Path:
    """Write a diffusers ``StableDiffusionPipeline`` folder (safetensors) to ``out``; returns it.

    The folder is assembled next to ``out`` and swapped in, so ``out`` is never half-written.
    """
    work, out = Path(work), Path(out)
    module, step = load_stage2(work, ema)
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(final_vae(work), use_safetensors=True),
        text_encoder=module.text_encoder,
        tokenizer=load_tokenizer(work),
        unet=module.unet,
        scheduler=make_sampling_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with replaced_folder(out) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "training_step.json").write_text(json.dumps({"stage2_step": step, "ema": ema}))
    return out
