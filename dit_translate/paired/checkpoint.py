"""Checkpoint folders of paired models, and atomic, exactly-resumable training state. No pickle anywhere.

A checkpoint folder (what ``train --out`` writes and ``translate``/``eval --checkpoint`` read)::

    paired.json                    kind (dit | pix2pix), image size, preset tables, encoder references, step
    model/                         the network: config.json + diffusion_pytorch_model.safetensors (EMA weights)
    scheduler/                     the DDIM scheduler config (DiT only)
    vae/, clip/                    copies of local encoders (hub ids and open_clip tags are only named)
    train_state.safetensors        training state for exact resume (see ``save_state``)
    loss.csv, samples/, run.json   training log, sample grids, the run's configuration

Training state is any nest of dicts/lists/tuples/scalars/tensors (model, EMA, optimizer and scheduler
state dicts, RNG): tensors become safetensors entries, the rest a JSON skeleton in the file's metadata
(dict keys keep their int/str type, so optimizer states load back). Every file is written atomically
(``dit_translate.files``): a temporary name, then ``os.replace``; a killed save leaves the previous
state loadable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dit_translate.files import atomic_write, staged_folder, write_text_atomic
from dit_translate.paired.config import PairedSpec, is_local_ref, parse_paired
from dit_translate.presets import LOCAL_DIR, Preset

FORMAT = "dit-translate-paired"
VERSION = 1
META_FILE = "paired.json"
STATE_FILE = "train_state.safetensors"
MODEL_DIR = "model"
SCHEDULER_DIR = "scheduler"


class CheckpointError(ValueError):
    """A folder that is not a (complete) paired checkpoint; the message names it and what is missing."""


# ---- training state ----------------------------------------------------------------------------
def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if torch.is_tensor(obj):
        key = str(len(tensors))
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"t": key}
    if isinstance(obj, dict):
        return {"d": [[k, _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"l" if isinstance(obj, list) else "u": [_flatten(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"v": obj}
    raise TypeError(f"cannot store a {type(obj).__name__} in a training state")


def _unflatten(node: dict, tensors: dict[str, torch.Tensor]) -> Any:
    (tag, value), = node.items()
    if tag == "t":
        return tensors[value]
    if tag == "d":
        return {k: _unflatten(v, tensors) for k, v in value}
    if tag == "l":
        return [_unflatten(v, tensors) for v in value]
    if tag == "u":
        return tuple(_unflatten(v, tensors) for v in value)
    return value


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write a nested training ``state`` to one safetensors file."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT,
                                                                       "state": json.dumps(skeleton)}))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read what ``save_state`` wrote (tensors on the CPU)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a dit-translate training state")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _unflatten(json.loads(meta["state"]), tensors)


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
