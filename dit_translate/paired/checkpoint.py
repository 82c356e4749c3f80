"""Checkpoint folders of paired models. No pickle anywhere.

A checkpoint folder (what ``train --out`` writes and ``translate``/``eval --checkpoint`` read)::

    paired.json                    kind (dit | pix2pix), image size, preset tables, encoder references, step
    model/                         the network: config.json + diffusion_pytorch_model.safetensors (EMA weights)
    scheduler/                     the DDIM scheduler config (DiT only)
    vae/, clip/                    copies of local encoders (hub ids and open_clip tags are only named)
    train_state.safetensors        training state for exact resume (``training.save_state``)
    loss.csv, samples/, run.json   training log, sample grids, the run's configuration

Every file is written atomically (``dit_translate.files``): a temporary name, then ``os.replace``; a
killed save leaves the previous checkpoint loadable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from dit_translate.errors import CheckpointError
from dit_translate.files import atomic_write, staged_folder, write_text_atomic
from dit_translate.paired.config import PairedSpec, parse_paired
from dit_translate.presets import Preset
from dit_translate.refs import LOCAL_DIR, is_local_ref

FORMAT = "dit-translate-paired"
VERSION = 1
META_FILE = "paired.json"
STATE_FILE = "train_state.safetensors"
MODEL_DIR = "model"
SCHEDULER_DIR = "scheduler"


# ---- checkpoint folders ------------------------------------------------------------------------
def encoder_refs(spec: PairedSpec) -> dict[str, str]:
    """The encoder references a checkpoint records: local encoders become ``./vae`` and ``local-dir:./clip``
    (copied there by ``write_checkpoint``), hub ids and open_clip names stay as they are."""
    enc = spec.encoders
    local_vae = is_local_ref(enc.vae)
    return {
        "vae": "./vae" if local_vae else enc.vae,
        "vae_subfolder": "" if local_vae else enc.vae_subfolder,
        "clip": LOCAL_DIR + "./clip" if enc.clip.startswith(LOCAL_DIR) else enc.clip,
    }


def _relative(ref: str) -> bool:
    return ref.startswith(("./", "../"))


def resolve_refs(refs: dict[str, str], folder: Path) -> dict[str, str]:
    """Encoder references of a checkpoint in ``folder`` with its relative (``./``, ``../``) paths made absolute.

    ``./`` refs point at the copies ``write_checkpoint`` makes; ``../`` refs at encoders shared with
    sibling folders (see ``share_encoders``).
    """
    out = dict(refs)
    if _relative(refs["vae"]):
        out["vae"] = str((folder / refs["vae"]).resolve())
    clip = refs["clip"]
    if clip.startswith(LOCAL_DIR) and _relative(clip[len(LOCAL_DIR):]):
        out["clip"] = LOCAL_DIR + str((folder / clip[len(LOCAL_DIR):]).resolve())
    return out


def share_encoders(folder: str | Path, vae: str, clip: str) -> None:
    """Point checkpoint ``folder`` at encoder folders it shares with its siblings instead of its own copies.

    ``vae`` (e.g. ``"../sd/vae"``) and ``clip`` (e.g. ``"local-dir:../clip"``) are relative to ``folder``
    and must hold byte-identical weights to the copies in ``folder/vae`` and ``folder/clip``, which are
    then removed (so shipped tiny models store each encoder once). Raises ``CheckpointError`` otherwise.
    """
    folder = Path(folder)
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    targets = {"vae": (folder / vae).resolve(), "clip": (folder / clip.removeprefix(LOCAL_DIR)).resolve()}
    for name, shared in targets.items():
        own = folder / name
        for f in own.glob("*.safetensors"):
            if not (shared / f.name).is_file() or (shared / f.name).read_bytes() != f.read_bytes():
                raise CheckpointError(f"{shared / f.name} differs from {f} (or is missing): cannot share it")
    meta["encoders"] = {"vae": vae, "vae_subfolder": "", "clip": clip}
    write_text_atomic(folder / META_FILE, json.dumps(meta, indent=2))
    for name in targets:
        shutil.rmtree(folder / name)


def copy_local_encoders(spec: PairedSpec, folder: Path, clip_spec: str | None) -> None:
    """Copy the local VAE and the local CLIP folder actually used (``clip_spec``) into ``folder``, once
    (each copy is made under a temporary name and renamed when complete)."""
    enc = spec.encoders
    copies = {}
    if is_local_ref(enc.vae):
        copies["vae"] = Path(enc.vae) / enc.vae_subfolder
    if clip_spec is not None and clip_spec.startswith(LOCAL_DIR):
        copies["clip"] = Path(clip_spec[len(LOCAL_DIR):])
    for name, source in copies.items():
        if not (folder / name).exists():
            atomic_write(folder / name, lambda tmp, source=source: shutil.copytree(source, tmp))


def checkpoint_defaults(preset: Preset) -> dict[str, Any]:
    """The sampling defaults a checkpoint trained from ``preset`` carries: steps, guidance and the
    working size (longer side) translation fits images to."""
    d = preset.defaults
    return {"steps": d.steps, "guidance": d.guidance, "size": d.size or preset.size}


def write_checkpoint(
    folder: str | Path,
    *,
    kind: str,
    net: torch.nn.Module,
    spec: PairedSpec,
    image_size: int,
    step: int,
    preset: str,
    defaults: dict[str, Any] | None = None,
    untrained: bool = False,
    scheduler=None,
    clip_spec: str | None = None,
    clip_untrained: bool = False,
) -> Path:
    """Write (or update) the loadable part of a checkpoint folder: network, scheduler, encoders, paired.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copy_local_encoders(spec, folder, clip_spec)
    with staged_folder(folder / MODEL_DIR) as staging:
        net.save_pretrained(staging, safe_serialization=True)
    if scheduler is not None:
        with staged_folder(folder / SCHEDULER_DIR) as staging:
            scheduler.save_pretrained(staging)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "image_size": image_size,
        "step": step,
        "preset": preset,
        "untrained": untrained,
        "clip_untrained": clip_untrained,
        "defaults": defaults or {},
        "encoders": encoder_refs(spec),
        "spec": spec.to_dict(),
    }
    write_text_atomic(folder / META_FILE, json.dumps(meta, indent=2))
    return folder


def read_meta(folder: str | Path) -> tuple[dict[str, Any], PairedSpec]:
    """The validated ``paired.json`` of a checkpoint folder and its preset tables."""
    folder = Path(folder)
    path = folder / META_FILE
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a paired checkpoint: it has no {META_FILE} "
                              "(train one with `python -m dit_translate train --config ... --out DIR`)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path} is not a version-{VERSION} {FORMAT} file")
    if not (folder / MODEL_DIR / "config.json").is_file():
        raise CheckpointError(f"checkpoint {folder} has no {MODEL_DIR}/config.json "
                              "(was its training interrupted before the first save?)")
    return meta, parse_paired(meta["spec"], int(meta["image_size"]))
