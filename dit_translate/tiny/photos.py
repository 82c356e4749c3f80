"""More real photographs for the tiny world, fetched offline from Debian packages by a manifest.

``assets/tiny/data/photos.json`` lists each photo: the package and pinned version it comes from,
its path in the package (and, for images inside a Qt resource file, its ``member`` there), the
sha256 of its bytes, licence, author, a content caption ("a dog"), a kind and a split. ``build``
downloads each package with ``apt-get download`` (the pinned version, else the current one with
a warning), reads only the listed files, refuses any whose sha256 differs, and writes resized
JPEGs plus an index ``photos.json`` into a folder. ``load_extracted`` reads that folder back for
one split; the split always comes from the committed manifest, so a held-out ("test") photo never
reaches a training set, whatever the folder's index says. See assets/tiny/data/LICENSES.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MANIFEST = Path(__file__).resolve().parents[2] / "assets" / "tiny" / "data" / "photos.json"
FETCH_COMMAND = "python -m dit_translate.tiny photos --out DIR"
SPLITS = ("train", "test")
KINDS = frozenset({"people", "animal", "plant", "food", "object", "vehicle", "building", "landscape"})
LICENCES = frozenset({
    "public-domain", "CC0-1.0", "CC-BY-1.0", "CC-BY-2.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-2.0",
    "CC-BY-SA-2.5", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only",
    "GPL-3.0-or-later", "LGPL-3.0", "GFDL-1.2-no-invariants",
})
LONG_SIDE = 512
JPEG_QUALITY = 92
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Photo:
    """One manifest entry: where a photo lives in a Debian package, and what it is."""

    name: str
    package: str
    version: str
    path: str
    sha256: str
    licence: str
    author: str
    caption: str
    kind: str
    split: str
    member: str | None = None
    source: str | None = None
    note: str | None = None


def validate(photo: Photo) -> None:
    """Raise ValueError unless ``photo`` is a well-formed entry with an allowed licence."""
    problems = [
        (not _NAME.match(photo.name), "bad name"),
        (not _SHA256.match(photo.sha256), "sha256 is not 64 lower-case hex digits"),
        (photo.licence not in LICENCES, f"licence {photo.licence!r} not in the allow-list"),
        (photo.split not in SPLITS, f"split {photo.split!r} not in {SPLITS}"),
        (photo.kind not in KINDS, f"kind {photo.kind!r} unknown"),
        (not photo.caption.strip() or not photo.author.strip(), "empty caption or author"),
        (not photo.path.startswith("/"), "path must be absolute inside the package"),
    ]
    if bad := [msg for cond, msg in problems if cond]:
        raise ValueError(f"manifest entry {photo.name!r}: {'; '.join(bad)}")


def load_manifest(path: str | Path = MANIFEST) -> list[Photo]:
    """The validated entries of a manifest file; names must be unique."""
    photos = [Photo(**entry) for entry in json.loads(Path(path).read_text())["photos"]]
    for photo in photos:
        validate(photo)
    names = [p.name for p in photos]
    if len(set(names)) != len(names):
        raise ValueError("manifest names are not unique")
    return photos


# ---------------------------------------------------------------- packages and files


def apt_download(package: str, version: str, dest: Path) -> Path:
    """``apt-get download package=version`` into ``dest``; the current version (with a warning)
    when the pinned one is gone. Returns the .deb."""
    for spec in (f"{package}={version}", package):
        done = subprocess.run(["apt-get", "download", spec], cwd=dest, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            return next(dest.glob(f"{package}_*.deb"))
        print(f"warning: apt-get download {spec} failed: {done.stderr.strip()}", file=sys.stderr)
        if spec != package:
            print(f"warning: falling back to the current version of {package}; sha256 checks decide", file=sys.stderr)
    raise RuntimeError(f"could not download {package}")


def read_deb_files(deb: Path, paths: Iterable[str]) -> dict[str, bytes]:
    """The bytes of the listed absolute ``paths`` in a .deb's data (``dpkg-deb --fsys-tarfile``)."""
    wanted = set(paths)
    found = {}
    with (subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc,
          tarfile.open(fileobj=proc.stdout, mode="r|") as tar):
        for info in tar:
            name = "/" + info.name.removeprefix("./")
            if name in wanted and info.isfile():
                found[name] = tar.extractfile(info).read()
    if proc.returncode:
        raise RuntimeError(f"dpkg-deb could not read {deb}")
    return found


def rcc_files(blob: bytes) -> dict[str, bytes]:
    """All files of a Qt binary resource (.rcc, format 2 or 3, zlib or none) by resource path."""
    magic, version, tree, data, names = struct.unpack(">4sIIII", blob[:20])
    if magic != b"qres" or version not in (2, 3):
        raise ValueError("not a Qt resource file of format 2 or 3")

    def node(i: int) -> tuple[str, int, int, int]:
        base = tree + 22 * i
        name_off, flags, a, b = struct.unpack(">IHII", blob[base : base + 14])
        off = names + name_off
        length = struct.unpack(">H", blob[off : off + 2])[0]
        return blob[off + 6 : off + 6 + 2 * length].decode("utf-16-be"), flags, a, b

    def content(flags: int, offset: int) -> bytes:
        if flags & 4:
            raise ValueError("zstd-compressed resources are not supported")
        start = data + offset
        size = struct.unpack(">I", blob[start : start + 4])[0]
        raw = blob[start + 4 : start + 4 + size]
        return zlib.decompress(raw[4:]) if flags & 1 else raw

    out: dict[str, bytes] = {}

    def walk(i: int, prefix: str) -> None:
        name, flags, a, b = node(i)
        path = f"{prefix}{name}" if i else ""
        if flags & 2:  # directory: a = child count, b = first child
            for child in range(b, b + a):
                walk(child, f"{path}/" if path else "")
        else:  # file: b = data offset
            out[path] = content(flags, b)

    walk(0, "")
    return out


def photo_bytes(photo: Photo, files: dict[str, bytes]) -> bytes | None:
    """The photo's own bytes from its package's ``files`` (inside the .rcc when it has a member)."""
    blob = files.get(photo.path)
    if blob is None or photo.member is None:
        return blob
    return rcc_files(blob).get(photo.member)


# ---------------------------------------------------------------- images and the stage


def to_rgb(blob: bytes) -> Image.Image:
    """Decode any image file to RGB; transparent parts (cut-out stamps) become white."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(blob)))
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def shrink(img: Image.Image, long_side: int = LONG_SIDE) -> Image.Image:
    """Downscale (never upscale) so the longer side is at most ``long_side`` (Lanczos)."""
    scale = long_side / max(img.size)
    if scale >= 1:
        return img
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)


def build(out: str | Path, manifest: str | Path = MANIFEST,
          download: Callable[[str, str, Path], Path] = apt_download) -> Path:
    """Fetch every manifest package, verify and write its photos into ``out``; returns the index.

    Each photo becomes ``out/<name>.jpg`` (longer side <= LONG_SIDE); ``out/photos.json`` lists
    the written ones with their manifest fields and size. A photo whose bytes are missing or whose
    sha256 differs is skipped with an error line on stderr.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    photos = load_manifest(manifest)
    written = []
    for package in sorted({p.package for p in photos}):
        mine = [p for p in photos if p.package == package]
        with tempfile.TemporaryDirectory() as tmp:
            deb = download(package, mine[0].version, Path(tmp))
            files = read_deb_files(deb, {p.path for p in mine})
        for photo in mine:
            blob = photo_bytes(photo, files)
            if blob is None or hashlib.sha256(blob).hexdigest() != photo.sha256:
                why = "missing from the package" if blob is None else "sha256 mismatch"
                print(f"error: {photo.name} ({package}:{photo.path}) {why}; skipped", file=sys.stderr)
                continue
            img = shrink(to_rgb(blob))
            img.save(out / f"{photo.name}.jpg", quality=JPEG_QUALITY, subsampling=0)
            written.append({**asdict(photo), "file": f"{photo.name}.jpg", "size": list(img.size)})
    index = out / "photos.json"
    index.write_text(json.dumps({"version": 1, "photos": written}, indent=1, ensure_ascii=False))
    print(f"wrote {len(written)} of {len(photos)} photos to {out}", file=sys.stderr)
    return index


def load_extracted(folder: str | Path, split: str,
                   manifest: str | Path | None = None) -> dict[str, tuple[np.ndarray, str]]:
    """Photos of ``split`` ("train", "test" or "all") from a ``build`` folder: name -> (uint8 HxWx3,
    caption), in manifest order. Splits come from the committed manifest, never from the folder."""
    if split not in (*SPLITS, "all"):
        raise ValueError(f"unknown split {split!r}; expected 'train', 'test' or 'all'")
    index = Path(folder) / "photos.json"
    if not index.is_file():
        raise FileNotFoundError(f"no extracted photos in {folder}; fetch them with `{FETCH_COMMAND}`")
    present = {entry["name"] for entry in json.loads(index.read_text())["photos"]}
    return {
        p.name: (np.asarray(Image.open(Path(folder) / f"{p.name}.jpg").convert("RGB")), p.caption)
        for p in load_manifest(manifest or MANIFEST)
        if p.name in present and split in ("all", p.split)
    }
