"""References to models, checked without loading anything (no torch): hub ids, local folders and the
``local-dir:FOLDER`` specs of open_clip and timm.

A reference is *local* when it starts with ``.``, ``/`` or ``~``; anything else is a Hugging Face Hub id.
Relative folders are resolved against the folder of the file that names them (a preset, a checkpoint).
Errors are ``ValueError`` whose message starts with ``what`` (e.g. ``"[guidance] clip"``).
"""

from __future__ import annotations

from pathlib import Path

LOCAL_DIR = "local-dir:"
"""The prefix open_clip and timm use for a model in a local folder."""
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shown_path(path: str | Path) -> str:
    """``path`` as messages and the app show it: relative to the project folder when inside it
    (``assets/tiny/sd``), ``~/...`` inside the home folder, else unchanged, so that neither discloses the
    server's folder layout."""
    path = Path(path)
    for base, prefix in ((PROJECT_ROOT, ""), (Path.home(), "~/")):
        try:
            return prefix + str(path.resolve().relative_to(base.resolve()))
        except (ValueError, OSError, RuntimeError):
            continue
    return str(path)


def is_local_ref(ref: str) -> bool:
    """True when a VAE or weights reference names a local path (``.``, ``..``, ``/``, ``~``), not a hub id."""
    return ref.startswith((".", "/", "~"))


def is_local_dir(spec: str) -> bool:
    """True for a ``local-dir:FOLDER`` spec."""
    return spec.startswith(LOCAL_DIR)


def local_dir_folder(spec: str) -> Path:
    """The folder of a ``local-dir:FOLDER`` spec."""
    if not is_local_dir(spec):
        raise ValueError(f"{spec!r} is not a '{LOCAL_DIR}' spec")
    return Path(spec[len(LOCAL_DIR):])


def absolute(path: str, base: Path | None) -> str:
    """``path`` resolved against the folder ``base`` (``~`` expanded); unchanged when ``base`` is None."""
    return path if base is None else str((base / Path(path).expanduser()).resolve())


def resolve_local_dir(spec: str, base: Path | None, what: str) -> str:
    """``"local-dir:FOLDER"`` with ``FOLDER`` made absolute against ``base``."""
    folder = spec[len(LOCAL_DIR):].strip()
    if not folder:
        raise ValueError(f"{what} {spec!r} names no folder after '{LOCAL_DIR}'")
    return LOCAL_DIR + absolute(folder, base)


def resolve_clip_ref(spec: str, base: Path | None, what: str) -> str:
    """An open_clip reference checked: ``"arch/pretrained-tag"`` as is, or ``local-dir:`` made absolute."""
    if is_local_dir(spec):
        return resolve_local_dir(spec, base, what)
    arch, _, tag = spec.partition("/")
    if not arch or not tag or "/" in tag or " " in spec:
        raise ValueError(f"{what} {spec!r} must be 'arch/pretrained-tag' (e.g. 'ViT-B-32/openai') "
                         "or 'local-dir:folder'")
    return spec


def resolve_timm_ref(spec: str, base: Path | None, what: str) -> str:
    """A timm reference checked: ``"arch.tag"`` as is, or ``local-dir:`` made absolute."""
    if is_local_dir(spec):
        return resolve_local_dir(spec, base, what)
    if "/" in spec or ":" in spec or " " in spec:
        raise ValueError(f"{what} {spec!r} must be a timm id such as 'vit_base_patch8_224.dino' or 'local-dir:folder'")
    return spec
