"""The tiny world's Debian-package photos: manifest, held-out policy, extraction and loading (offline)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import subprocess
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dit_translate.tiny import data as D
from dit_translate.tiny import photos as P

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")


def _png(size: tuple[int, int], colour: tuple[int, ...], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _rcc(files: dict[str, bytes]) -> bytes:
    """A format-2 Qt resource file holding ``files`` in folder ``img/`` (the first one zlib-compressed)."""
    names = ["", "img"] + [path.removeprefix("img/") for path in files]
    name_blob, name_off = b"", []
    for n in names:
        name_off.append(len(name_blob))
        name_blob += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
    data_blob, data_off = b"", []
    for i, blob in enumerate(files.values()):
        data_off.append(len(data_blob))
        stored = struct.pack(">I", len(blob)) + zlib.compress(blob) if i == 0 else blob
        data_blob += struct.pack(">I", len(stored)) + stored
    nodes = struct.pack(">IHII", name_off[0], 2, 1, 1) + bytes(8)
    nodes += struct.pack(">IHII", name_off[1], 2, len(files), 2) + bytes(8)
    for i in range(len(files)):
        nodes += struct.pack(">IHHHI", name_off[2 + i], 1 if i == 0 else 0, 0, 0, data_off[i]) + bytes(8)
    data_at = 20
    names_at = data_at + len(data_blob)
    tree_at = names_at + len(name_blob)
    return struct.pack(">4sIIII", b"qres", 2, tree_at, data_at, names_at) + data_blob + name_blob + nodes


def _sha(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _photo(name: str, path: str, blob: bytes, split: str = "train", **kw) -> P.Photo:
    return P.Photo(name=name, package="fake-photos", version="1.0", path=path, sha256=_sha(blob),
                   licence="CC0-1.0", author="someone", caption=f"a {name}", kind="object", split=split, **kw)


# ---------------------------------------------------------------- the committed manifest


def test_manifest_entries_are_valid_and_licensed():
    photos = P.load_manifest()
    assert len(photos) >= 300
    for p in photos:
        assert p.licence in P.LICENCES and p.caption and p.author and p.split in P.SPLITS
        assert len(p.sha256) == 64 and int(p.sha256, 16) >= 0
    assert len({p.sha256 for p in photos}) == len(photos), "the same file listed twice"


def test_held_out_split_is_disjoint_sized_and_has_people():
    photos = P.load_manifest()
    train = {p.name for p in photos if p.split == "train"}
    test = {p.name for p in photos if p.split == "test"}
    assert train and test and not train & test
    assert 0.07 <= len(test) / len(photos) <= 0.15
    assert sum(p.kind == "people" for p in photos if p.split == "test") >= 3
    assert not (train | test) & set(D.PHOTOS), "names collide with the scikit-image photos"


@pytest.mark.parametrize("field,value", [("licence", "CC-BY-NC-4.0"), ("split", "val"), ("sha256", "abc"),
                                         ("caption", " "), ("kind", "painting")])
def test_validate_refuses_bad_entries(field, value):
    good = _photo("x", "/a.png", b"x")
    P.validate(good)
    with pytest.raises(ValueError):
        P.validate(replace(good, **{field: value}))


# ---------------------------------------------------------------- extraction from a fake package


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> dict:
    """A fake .deb (built with dpkg-deb), its manifest (one entry with a wrong sha256) and a built folder."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    root = tmp_path_factory.mktemp("fake")
    pkg = root / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: fake-photos\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n")
    big, small = _png((800, 600), (200, 30, 30)), _png((40, 30), (0, 0, 255, 0), "RGBA")
    inner = {"img/c.png": _png((64, 64), (0, 160, 0)), "img/d.png": _png((70, 50), (9, 9, 9))}
    files = {"usr/share/fake/a.png": big, "usr/share/fake/b.png": small, "usr/share/fake/unlisted.png": big,
             "usr/share/fake/res.rcc": _rcc(inner)}
    for rel, blob in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(blob)
    deb = root / "fake-photos_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    photos = [_photo("a", "/usr/share/fake/a.png", big),
              _photo("b", "/usr/share/fake/b.png", small, split="test"),
              replace(_photo("bad", "/usr/share/fake/a.png", big), sha256="0" * 64),
              _photo("c", "/usr/share/fake/res.rcc", inner["img/c.png"], member="img/c.png"),
              _photo("d", "/usr/share/fake/res.rcc", inner["img/d.png"], split="test", member="img/d.png")]
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "photos": [asdict(p) for p in photos]}))
    calls = []

    def download(package: str, version: str, dest: Path) -> Path:
        calls.append((package, version))
        return Path(shutil.copy(deb, dest))

    out = root / "out"
    return {"deb": deb, "manifest": manifest, "out": out, "calls": calls, "inner": inner,
            "index": P.build(out, manifest, download=download)}


def test_read_deb_files_reads_only_the_listed_files(fake):
    got = P.read_deb_files(fake["deb"], ["/usr/share/fake/a.png", "/usr/share/fake/missing.png"])
    assert list(got) == ["/usr/share/fake/a.png"]


def test_rcc_files_reads_plain_and_zlib_members(fake):
    files = P.read_deb_files(fake["deb"], ["/usr/share/fake/res.rcc"])
    assert P.rcc_files(files["/usr/share/fake/res.rcc"]) == fake["inner"]


def test_build_writes_verified_photos(fake):
    assert fake["calls"] == [("fake-photos", "1.0")]
    index = json.loads(fake["index"].read_text())["photos"]
    assert [e["name"] for e in index] == ["a", "b", "c", "d"]
    assert sorted(p.name for p in fake["out"].iterdir()) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "photos.json"]
    assert Image.open(fake["out"] / "a.jpg").size == (512, 384)  # longer side shrunk to 512
    assert Image.open(fake["out"] / "b.jpg").size == (40, 30)  # never enlarged
    b = np.asarray(Image.open(fake["out"] / "b.jpg"))
    assert b.min() > 240  # transparent pixels became white


def test_build_reports_the_mismatch(tmp_path, fake, capsys):
    P.build(tmp_path, fake["manifest"], download=lambda pkg, ver, dest: Path(shutil.copy(fake["deb"], dest)))
    assert "bad" in capsys.readouterr().err and not (tmp_path / "bad.jpg").exists()


def test_loader_splits_come_from_the_manifest(fake):
    load = P.load_extracted
    assert set(load(fake["out"], "train", fake["manifest"])) == {"a", "c"}
    assert set(load(fake["out"], "test", fake["manifest"])) == {"b", "d"}
    img, caption = load(fake["out"], "all", fake["manifest"])["c"]
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3) and caption == "a c"
    with pytest.raises(ValueError):
        load(fake["out"], "val", fake["manifest"])


def test_loader_ignores_a_tampered_index(fake, tmp_path):
    shutil.copytree(fake["out"], tmp_path / "out")
    index = tmp_path / "out" / "photos.json"
    entries = json.loads(index.read_text())
    for e in entries["photos"]:
        e["split"] = "train"
    index.write_text(json.dumps(entries))
    assert set(P.load_extracted(tmp_path / "out", "train", fake["manifest"])) == {"a", "c"}


def test_missing_folder_names_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="dit_translate.tiny photos"):
        D.load_extra_photos(tmp_path / "nothing", "train")


def test_tiny_dataset_adds_extra_photos_of_its_split(fake, monkeypatch):
    monkeypatch.setattr(P, "MANIFEST", fake["manifest"])
    train = D.TinyDataset("train", size=16, crops_per_photo=1, styles=("photo",), extra_photos=fake["out"])
    test = D.TinyDataset("test", size=16, crops_per_photo=1, styles=("photo",), extra_photos=fake["out"])
    assert train.photo_names[-2:] == ["a", "c"] and train.captions[-1] == "a photo of a c"
    assert test.photo_names == [*D.HELD_OUT, "b", "d"]


# ---------------------------------------------------------------- apt-get download


def test_apt_download_falls_back_to_the_current_version(tmp_path, monkeypatch, capsys):
    specs = []

    def fake_run(cmd, cwd, **kw):
        specs.append(cmd[-1])
        if "=" in cmd[-1]:
            return subprocess.CompletedProcess(cmd, 100, "", "E: Version '1.0' for 'pkg' was not found")
        (Path(cwd) / "pkg_2.0_all.deb").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(P.subprocess, "run", fake_run)
    assert P.apt_download("pkg", "1.0", tmp_path).name == "pkg_2.0_all.deb"
    assert specs == ["pkg=1.0", "pkg"] and "falling back" in capsys.readouterr().err
