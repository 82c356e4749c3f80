"""Paired folders: layouts, direction, splits, joint augmentation, resumable sampling, clear problem reports."""

import logging
import random

import numpy as np
import pytest
import torch
from PIL import Image
from test_paired_support import ab_data, toy_pair, write_ab_pairs  # noqa: F401 - fixture

from dit_translate.images import to_tensor
from dit_translate.paired.config import DataSpec
from dit_translate.paired.data import DataError, PairedDataset, PairSampler, joint_transform, split_pairs


def _tensor(a: np.ndarray) -> torch.Tensor:
    return to_tensor(Image.fromarray(a))[0]


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_ab_images_split_at_the_middle_with_direction(ab_data, direction):
    ds = PairedDataset(ab_data, DataSpec(direction=direction), 32, "all", augment=False)
    item, (a, b) = ds[0], toy_pair(0)
    src, tgt = (a, b) if direction == "AtoB" else (b, a)
    assert torch.equal(item["source"], _tensor(src)) and torch.equal(item["target"], _tensor(tgt))
    assert len(ds) == 6 and item["source"].shape == (3, 32, 32)


def test_two_folders_pair_by_name_and_report_unpaired_files(tmp_path, caplog):
    spec = DataSpec(layout="folders", a_dir="faces", b_dir="comics")
    (tmp_path / "faces").mkdir()
    (tmp_path / "comics").mkdir()
    for i, name in enumerate(["a", "b", "c"]):
        a, b = toy_pair(i)
        Image.fromarray(a).save(tmp_path / "faces" / f"{name}.png")
        Image.fromarray(b).save(tmp_path / "comics" / f"{name}.jpg")  # extensions may differ
    Image.fromarray(a).save(tmp_path / "faces" / "lonely.png")
    Image.fromarray(b).save(tmp_path / "comics" / "orphan.png")
    with caplog.at_level(logging.WARNING):
        pairs = split_pairs(tmp_path, spec, "all")
    assert [p.name for p in pairs] == ["a", "b", "c"]
    assert "1 image(s) in" in caplog.text and "lonely.png" in caplog.text and "orphan.png" in caplog.text
    with pytest.raises(DataError, match="has no 'faces' folder"):
        split_pairs(tmp_path / "faces", spec, "all")


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    spec = DataSpec(layout="folders")
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    a, b = toy_pair(0)
    for name in ("good", "sizes"):
        Image.fromarray(a).save(tmp_path / "A" / f"{name}.png")
    Image.fromarray(b).save(tmp_path / "B" / "good.png")
    Image.fromarray(b[:16]).save(tmp_path / "B" / "sizes.png")
    (tmp_path / "A" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (tmp_path / "B" / "broken.png").write_bytes(b"not an image at all")
    ds = PairedDataset(tmp_path, spec, 32, "all", augment=False)
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(it["target"], _tensor(b)) for it in items)  # every index falls back to 'good'
    assert "skipping pair 'broken'" in caplog.text and "truncated or corrupt" in caplog.text
    assert "skipping pair 'sizes'" in caplog.text and "is 32x32 but 'sizes.png' is 32x16" in caplog.text


def test_odd_width_ab_image_is_reported(tmp_path, caplog):
    Image.new("RGB", (33, 16)).save(tmp_path / "odd.png")
    ds = PairedDataset(tmp_path, DataSpec(), 32, "all")
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="none of the 1 pairs could be read"):
        ds[0]
    assert "cannot split 'odd.png' into A|B halves: its width 33 is odd" in caplog.text


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        split_pairs(tmp_path / "nope", DataSpec(), "train")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"no image pairs found in .* expected images with A\|B side by side"):
        split_pairs(tmp_path, DataSpec(), "all")


def test_splits_from_subfolders_or_a_stable_hash(tmp_path):
    write_ab_pairs(tmp_path / "sub" / "train", 5)
    write_ab_pairs(tmp_path / "sub" / "val", 2, names=["v0", "v1"])
    assert [p.name for p in split_pairs(tmp_path / "sub", DataSpec(), "val")] == ["v0.png", "v1.png"]
    assert len(split_pairs(tmp_path / "sub", DataSpec(), "all")) == 7
    flat = write_ab_pairs(tmp_path / "flat", 40, size=8)
    spec = DataSpec(val_fraction=0.25)
    train, val = ({p.name for p in split_pairs(flat, spec, s)} for s in ("train", "val"))
    assert not train & val and len(train | val) == 40 and 3 <= len(val) <= 20
    assert val == {p.name for p in split_pairs(flat, spec, "val")}  # deterministic


def test_joint_transform_crops_and_flips_both_images_alike():
    a, _ = toy_pair(1, 40)
    img = Image.fromarray(a)
    outs = [joint_transform(img, img.copy(), 32, 40, random.Random(seed)) for seed in range(12)]
    assert all(o["source"].shape == (3, 32, 32) and torch.equal(o["source"], o["target"]) for o in outs)
    assert len({o["source"].sum().item() for o in outs}) > 1  # random crops
    unflipped = [joint_transform(img, img, 32, 40, random.Random(seed), flip=False) for seed in range(12)]
    flipped = [not torch.equal(o["source"], u["source"]) for o, u in zip(outs, unflipped)]
    assert any(flipped) and not all(flipped)
    for o, u, f in zip(outs, unflipped, flipped):
        assert torch.equal(o["source"], u["source"].flip(-1) if f else u["source"])  # same crop, mirrored
    center = joint_transform(img, img, 32, 40)["source"]
    assert torch.equal(center, _tensor(np.asarray(img.resize((40, 40)).crop((4, 4, 36, 36)))))


def test_sampler_is_resumable_epoch_exact_and_ranks_are_disjoint():
    it = iter(PairSampler(n=5, batch=3, seed=7))
    first = [next(it) for _ in range(6)]
    resumed = iter(PairSampler(n=5, batch=3, seed=7, start=4))
    assert [next(resumed) for _ in range(2)] == first[4:]
    indices = [i for batch in first for i, _ in batch]
    assert all(sorted(indices[e * 5:(e + 1) * 5]) == list(range(5)) for e in range(3))  # each epoch once
    assert len({s for batch in first for _, s in batch}) == 18  # one augmentation seed per position
    r0, r1 = PairSampler(5, 2, 7, rank=0, world=2), PairSampler(5, 2, 7, rank=1, world=2)
    assert {s for _, s in r0.batch_at(0)}.isdisjoint({s for _, s in r1.batch_at(0)})
