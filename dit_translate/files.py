"""Atomic writes: the content goes to a temporary name next to the target, which then replaces it.

A failed write (full disk, no permission, an exception in the writer) or a process killed mid-write
never leaves a half-written file under the target's name: an existing target keeps its old content.
Temporary names are ``.<name>.<random hex>.tmp`` in the target's folder; a killed process can leave
one behind, and ``remove_stale_temps`` clears them in a folder the caller owns (a training run's).
"""

from __future__ import annotations

import csv
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dit_translate.errors import WriteError

TEMP_GLOB = ".*.tmp"
NAME_MAX = 255
"""Longest file name (in bytes) of the common file systems (ext4, XFS, btrfs, APFS, NTFS)."""


def temp_path(path: Path) -> Path:
    """A fresh temporary name next to ``path`` (matches ``TEMP_GLOB``); the name is cut so that it stays within
    ``NAME_MAX`` bytes, so any name that is legal for ``path`` is legal for its temporary too."""
    suffix = f".{secrets.token_hex(4)}.tmp"
    name = os.fsencode(path.name)[:NAME_MAX - 1 - len(suffix)]
    return path.with_name(f".{os.fsdecode(name)}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


_RUST_IO_MESSAGE = re.compile(r'IoError\(Os \{.*message: "([^"]+)"')
"""The OS message inside safetensors' report of an I/O error (its writer is Rust)."""


def _reason(exc: BaseException) -> str:
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    rust = _RUST_IO_MESSAGE.search(text)
    text = rust.group(1) if rust else text
    return text[:1].lower() + text[1:]


def _write_error(path: Path, exc: BaseException) -> WriteError:
    return WriteError(f"cannot write {path}: {_reason(exc)}")


def _is_write_failure(exc: BaseException) -> bool:
    """An I/O failure: ``OSError``, or safetensors' own error type (its Rust writer reports I/O errors so)."""
    from safetensors import SafetensorError

    return isinstance(exc, (OSError, SafetensorError))


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to create a file (or a folder) at a temporary name, then move it to ``path``.

    Files are fsynced before the move. A folder replaces ``path`` only if ``path`` does not exist. On
    failure the temporary is removed and I/O errors become one ``WriteError`` naming ``path``.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        if tmp.is_file():
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if _is_write_failure(exc):
            raise _write_error(path, exc) from exc
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a temporary folder to write files into; on success each file replaces its namesake in
    ``folder`` (created if needed), one ``os.replace`` per file. On failure nothing in ``folder`` changes."""
    folder = Path(folder)
    staging = temp_path(folder)
    try:
        yield staging
        folder.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            os.replace(f, folder / f.name)
        staging.rmdir()
    except BaseException as exc:
        _remove(staging)
        if _is_write_failure(exc):
            raise _write_error(folder, exc) from exc
        raise


@contextmanager
def replaced_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path to build a whole new ``folder`` at; on success it takes the place of
    ``folder`` (renames only, so ``folder`` is never half-written), on failure it is removed and ``folder``
    stays as it was. Temporaries of an earlier, killed build of ``folder`` are removed first."""
    folder = Path(folder)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        _remove(stale)
    tmp, old = temp_path(folder), temp_path(folder)
    try:
        yield tmp
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
    except BaseException as exc:
        _remove(tmp)
        if _is_write_failure(exc):
            raise _write_error(folder, exc) from exc
        raise
    _remove(old)


def publish_folder(folder: str | Path, build: Callable[[Path], object]) -> Path:
    """Build a folder once: ``build(tmp)`` at a fresh temporary name next to ``folder``, then rename it to
    ``folder``. When another process published ``folder`` first, its copy is kept and ours is dropped
    (for caches several processes may fill at once); a failed build leaves nothing behind."""
    folder = Path(folder)
    tmp = temp_path(folder)
    try:
        build(tmp)
    except BaseException:
        _remove(tmp)
        raise
    try:
        tmp.rename(folder)
    except OSError:
        _remove(tmp)
        if not folder.is_dir():
            raise
    return folder


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders (``TEMP_GLOB``) a killed writer left in ``folder``; returns them.

    Only for folders no other process is writing to at the same time.
    """
    stale = sorted(Path(folder).glob(TEMP_GLOB))
    for path in stale:
        _remove(path)
    return stale


def _step(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def trim_csv_log(path: str | Path, step: int) -> list[str] | None:
    """Keep the header and the complete rows up to ``step`` (first column) of the CSV log ``path``.

    A resumed run calls this before appending, so rows logged after its checkpoint go, and so does a
    row cut short by a kill. The log is rewritten atomically. Returns the header (None: no log yet).
    """
    path = Path(path)
    if not path.exists():
        return None
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return None
    header = rows[0]

    def kept(row: list[str]) -> bool:
        at = _step(row[0]) if len(row) == len(header) else None
        return at is not None and at <= step

    keep = [header] + [r for r in rows[1:] if kept(r)]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            csv.writer(f).writerows(keep)

    atomic_write(path, write)
    return header
