"""The tiny world's CLIP and DiT stages: the contrastive loss, the CLIP export, the paired data and
shipping a DiT checkpoint with encoders shared with its sibling folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dit_translate.guidance import load_clip
from dit_translate.paired.checkpoint import (
    CheckpointError,
    resolve_refs,
    share_encoders,
)
from dit_translate.presets import load_preset
from dit_translate.tiny import data as D
from dit_translate.tiny.checkpoint import load_weights
from dit_translate.tiny.train_clip import (
    CLIPTrainConfig,
    Contrastive,
    export_clip,
    train_clip,
)

SMALL_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}


def test_style_caption_names_only_the_style():
    assert [D.style_caption(s) for s in D.STYLES] == ["a photo", "a comic drawing", "a pencil sketch",
                                                      "a watercolor painting"]
    assert all(D.caption(s, "a cat").startswith(D.style_caption(s) + " of ") for s in D.STYLES)


class _FixedClip(torch.nn.Module):
    """Stands in for open_clip.CLIP: returns given embeddings, so the loss can be checked by hand."""

    def __init__(self, img: torch.Tensor, txt: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.img, self.txt = img, txt
        self.logit_scale = torch.nn.Parameter(torch.tensor(scale).log())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.img

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.txt


def test_contrastive_loss_treats_equal_captions_as_positives():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    ids = torch.tensor([7, 7, 2])  # items 0 and 1 share a caption
    out = Contrastive(_FixedClip(img, txt, 10.0))(torch.zeros(3, 3, 4, 4), torch.zeros(3, 77, dtype=torch.long), ids)
    logits = 10.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    by_hand = 0.0
    for lg in (logits, logits.T):  # image -> text and text -> image, each a soft-target cross-entropy
        by_hand += -(target * lg.log_softmax(1)).sum(1).mean() / 2
    assert out["loss"].item() == pytest.approx(by_hand.item(), rel=1e-6)
    pos = (logits.argmax(1) == torch.tensor([0, 0, 2])) | (logits.argmax(1) == torch.tensor([1, 1, 2]))
    assert out["accuracy"].item() == pytest.approx(pos.float().mean().item())


def test_clip_stage_trains_exports_and_loads_as_local_dir(tmp_path):
    data = D.TinyDataset("train", size=32, crops_per_photo=1, styles=("photo", "comic"), seed=0)
    cfg = CLIPTrainConfig(steps=3, batch_size=8, warmup=1, size=32, save_every=3, log_every=1, model=SMALL_CLIP)
    train_clip(tmp_path / "run", cfg, data)
    out = export_clip(tmp_path / "run", tmp_path / "clip")
    meta = json.loads((out / "open_clip_config.json").read_text())
    assert meta["model_cfg"] == SMALL_CLIP and meta["dit_translate"] == {"training_step": 3, "ema": True}
    assert not (tmp_path / "clip.partial").exists()

    preset = load_preset("tiny")
    enc, untrained = load_clip(f"local-dir:{out}", preset)
    assert not untrained
    import open_clip  # oracle: the EMA weights of the checkpoint in a freshly built model

    reference = Contrastive(open_clip.CLIP(**SMALL_CLIP))
    assert load_weights(tmp_path / "run" / "checkpoint.safetensors", reference, ema=True) == 3
    for name, p in reference.clip.state_dict().items():
        assert torch.equal(enc.model.state_dict()[name], p), name
    raw = Contrastive(open_clip.CLIP(**SMALL_CLIP))
    load_weights(tmp_path / "run" / "checkpoint.safetensors", raw, ema=False)
    assert any(not torch.equal(raw.state_dict()[k], v) for k, v in reference.state_dict().items())

    images = data.images[:4].float() / 127.5 - 1.0
    with torch.no_grad():
        x = (images + 1) / 2
        mean = torch.tensor(enc.mean).view(1, 3, 1, 1)
        std = torch.tensor(enc.std).view(1, 3, 1, 1)
        direct = F.normalize(reference.clip.encode_image((x - mean) / std), dim=-1)
    assert torch.allclose(enc.embed_image(images), direct, atol=1e-5)


def test_pairs_are_photo_left_and_its_comic_right(tmp_path):
    out = D.write_pairs(tmp_path / "pairs", size=32, crops_per_photo=8, seed=3)
    train, test = sorted((out / "train").iterdir()), sorted((out / "test").iterdir())
    n_train = len(D.PHOTOS) - len(D.HELD_OUT)
    leaves = [p for p in train if p.name.startswith("leaves_")]
    assert len(train) == 8 * n_train + len(leaves) and len(leaves) == 4 * n_train  # synthetic = 0.5
    assert len(test) == 1 * len(D.HELD_OUT)
    assert {p.name.rsplit("_", 1)[0] for p in test} == set(D.HELD_OUT)
    ab = np.asarray(Image.open(leaves[0]))
    np.testing.assert_array_equal(ab[:, 32:], D.render(ab[:, :32], "comic"))
    assert not {p.name.rsplit("_", 1)[0] for p in train} & set(D.HELD_OUT)
    oracle = D.TinyDataset("test", 32, 1, styles=("photo", "comic"), seed=4)  # the held-out split's seed
    for i, name in enumerate(D.HELD_OUT):
        ab = np.asarray(Image.open(out / "test" / f"{name}_0000.png"))
        assert ab.shape == (32, 64, 3)
        np.testing.assert_array_equal(ab[:, :32], oracle.images[2 * i].permute(1, 2, 0).numpy())
        np.testing.assert_array_equal(ab[:, 32:], oracle.images[2 * i + 1].permute(1, 2, 0).numpy())
        assert oracle.styles[2 * i : 2 * i + 2] == ["photo", "comic"]


def _checkpoint_with_copies(root):
    """A fake checkpoint folder ``root/dit`` with ``vae``/``clip`` copies of the siblings ``root/sd/vae``, ``root/clip``."""
    for folder, name in ((root / "sd" / "vae", "diffusion_pytorch_model.safetensors"),
                         (root / "clip", "open_clip_model.safetensors")):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"weights of " + folder.name.encode())
    dit = root / "dit"
    dit.mkdir()
    shutil.copytree(root / "sd" / "vae", dit / "vae")
    shutil.copytree(root / "clip", dit / "clip")
    meta = {"encoders": {"vae": "./vae", "vae_subfolder": "", "clip": "local-dir:./clip"}}
    (dit / "paired.json").write_text(json.dumps(meta))
    return dit


def test_share_encoders_points_at_identical_siblings_and_drops_copies(tmp_path):
    dit = _checkpoint_with_copies(tmp_path)
    share_encoders(dit, "../sd/vae", "local-dir:../clip")
    refs = json.loads((dit / "paired.json").read_text())["encoders"]
    assert refs == {"vae": "../sd/vae", "vae_subfolder": "", "clip": "local-dir:../clip"}
    assert not (dit / "vae").exists() and not (dit / "clip").exists()
    resolved = resolve_refs(refs, dit)
    assert resolved["vae"] == str((tmp_path / "sd" / "vae").resolve())
    assert resolved["clip"] == "local-dir:" + str((tmp_path / "clip").resolve())
    hub = resolve_refs({"vae": "stabilityai/sd-vae-ft-ema", "vae_subfolder": "", "clip": "ViT-B-32/openai"}, dit)
    assert hub == {"vae": "stabilityai/sd-vae-ft-ema", "vae_subfolder": "", "clip": "ViT-B-32/openai"}


def test_share_encoders_refuses_different_weights_and_changes_nothing(tmp_path):
    dit = _checkpoint_with_copies(tmp_path)
    (tmp_path / "clip" / "open_clip_model.safetensors").write_bytes(b"other weights")
    before = (dit / "paired.json").read_text()
    with pytest.raises(CheckpointError, match="open_clip_model.safetensors differs"):
        share_encoders(dit, "../sd/vae", "local-dir:../clip")
    assert (dit / "paired.json").read_text() == before
    assert (dit / "vae").is_dir() and (dit / "clip").is_dir()


def test_training_hours_schedule_two_chains_on_two_cores(tmp_path):
    import json

    from dit_translate.tiny.measure import training_hours

    cards = {"sd": {"vae_last": {"seconds": "4000"}, "sd_last": {"seconds": "5000.5"}},
             "clip": {"last": {"seconds": "1000"}}, "dit": {"last": {"seconds": "6000"}}}
    for name, card in cards.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(card))
    hours = training_hours(tmp_path)
    assert hours["unet"] == 5000.5 and hours["dit"] == 6000.0 and hours["decoder"] == 0.0
    assert hours["two_cores"] == 4000 + 6000  # CLIP fits beside the VAE; the DiT is the longer second stage
    cards["sd"]["decoder_last"] = {"seconds": "1500"}  # stage 1b only needs the VAE: after the U-Net or the DiT
    (tmp_path / "sd" / "eval.json").write_text(json.dumps(cards["sd"]))
    assert training_hours(tmp_path)["two_cores"] == 4000 + 5000.5 + 1500  # after the U-Net: 6500.5 < 6000 + 1500
    cards["sd"]["sd_last"] = {"seconds": "7000"}
    (tmp_path / "sd" / "eval.json").write_text(json.dumps(cards["sd"]))
    assert training_hours(tmp_path)["two_cores"] == 4000 + 6000 + 1500  # after the DiT: 7500 < 7000 + 1500


def test_stage_two_starts_from_an_exported_folder(tmp_path):
    """``SDTrainConfig.init``: a later session continues from the shipped U-Net and text encoder (any crop size)."""
    from dit_translate.tiny.models import make_text_encoder, make_train_scheduler, make_unet
    from dit_translate.tiny.train_sd import NoisePrediction, init_from_folder

    torch.manual_seed(1)
    make_unet().save_pretrained(tmp_path / "sd" / "unet", safe_serialization=True)
    make_text_encoder().save_pretrained(tmp_path / "sd" / "text_encoder", safe_serialization=True)
    torch.manual_seed(2)
    module = NoisePrediction(make_unet(sample_size=32), make_text_encoder(), make_train_scheduler())
    before = module.unet.conv_in.weight.clone()
    init_from_folder(module, tmp_path / "sd")
    saved = make_unet().__class__.from_pretrained(tmp_path / "sd" / "unet", use_safetensors=True)
    assert not torch.equal(before, module.unet.conv_in.weight)
    assert all(torch.equal(a, b) for a, b in zip(module.unet.state_dict().values(), saved.state_dict().values()))
    assert module.unet.config.sample_size == 32  # the new crop size's latents, the shipped weights
