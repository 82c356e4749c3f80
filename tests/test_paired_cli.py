"""The paired CLI: train -> translate -> eval on a generated AB folder, the untrained fallback, user errors."""

import json

import pytest
from PIL import Image
from test_paired_support import ab_data, tiny_clip, write_preset  # noqa: F401 - fixtures

from dit_translate import store, untrained
from dit_translate.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip, ab_data):
    """A DiT and a pix2pix checkpoint trained for 2 steps through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    config = write_preset(root / "toy.toml", tiny_clip, pix2pix={"ngf": 8, "ndf": 8})
    assert main(["train", "--config", str(config), "--data", str(ab_data), "--out", str(root / "dit"),
                 "--max-steps", "2"]) == 0
    assert main(["train", "--config", str(config), "--data", str(ab_data), "--out", str(root / "gan"),
                 "--max-steps", "2", "--model-kind", "pix2pix"]) == 0
    return root


def test_train_writes_a_checkpoint_folder(trained):
    folder = trained / "dit"
    for name in ("paired.json", "model/config.json", "model/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json", "clip/open_clip_config.json", "train_state.safetensors",
                 "loss.csv", "run.json", "samples/step_0000002.png"):
        assert (folder / name).is_file(), name
    assert json.loads((folder / "paired.json").read_text())["step"] == 2


def test_translate_json_and_output(trained, ab_data, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["translate", "--image", str(ab_data / "p0.png"), "--checkpoint", str(trained / "dit"),
                 "--steps", "3", "--seed", "1", "--output-size", "working", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["method"] == "dit" and payload["nfe"] == 6 and payload["device"] == "cpu"
    assert payload["size"] == [32, 16] and Image.open(out).size == (32, 16)  # 64x32 AB image, aspect kept
    assert -1 <= payload["metrics"]["ssim_to_source"] <= 1 and payload["untrained"] is False
    assert main(["translate", "--image", str(ab_data / "p0.png"), "--checkpoint", str(trained / "gan"),
                 "--out", str(tmp_path / "g.png")]) == 0
    assert "pix2pix:" in capsys.readouterr().out


def test_translation_fits_images_to_the_presets_working_size(tmp_path, tiny_clip, ab_data, capsys):
    config = write_preset(tmp_path / "wide.toml", tiny_clip, defaults={"size": 48})  # trains at size 32
    assert main(["train", "--config", str(config), "--data", str(ab_data), "--out", str(tmp_path / "dit"),
                 "--max-steps", "1"]) == 0
    assert json.loads((tmp_path / "dit" / "paired.json").read_text())["defaults"]["size"] == 48
    out = tmp_path / "o.png"
    assert main(["translate", "--image", str(ab_data / "p0.png"), "--checkpoint", str(tmp_path / "dit"),
                 "--steps", "2", "--output-size", "working", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["size"] == [48, 24] and Image.open(out).size == (48, 24)  # 64x32 source, longer side 48


def test_eval_compares_the_dit_with_the_gan(trained, ab_data, tmp_path, capsys):
    code = main(["eval", "--checkpoint", str(trained / "dit"), "--checkpoint", str(trained / "gan"),
                 "--data", str(ab_data), "--split", "all", "--limit", "4", "--steps", "2", "--out", str(tmp_path),
                 "--json"])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert [r["kind"] for r in report["rows"]] == ["identity", "dit", "pix2pix"] and report["pairs"] == 4
    for row in report["rows"]:
        assert {"psnr", "ssim", "lpips", "clip_similarity", "fid", "kid"} <= set(row)
        assert row["lpips"] is None  # no AlexNet weights offline: reported as missing, never guessed
    assert "LPIPS not computed" in captured.err and report["features"].startswith("local-dir:")
    table = (tmp_path / "eval.md").read_text()
    assert "| model | kind | PSNR ↑" in table and "| dit | dit |" in table and "| gan | pix2pix |" in table
    assert json.loads((tmp_path / "eval.json").read_text()) == report


def test_translate_tiny_dit_falls_back_to_a_labelled_untrained_model(tmp_path, ab_data, monkeypatch, capsys,
                                                                    tiny_dit_without_weights):
    monkeypatch.setattr(untrained, "UNTRAINED_CACHE", tmp_path / "cache")
    monkeypatch.setattr(store, "_default", None)
    out = tmp_path / "o.png"
    assert main(["translate", "--image", str(ab_data / "p1.png"), "--preset", str(tiny_dit_without_weights),
                 "--steps", "2", "--output-size", "working", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["untrained"] is True
    assert "UNTRAINED random model" in captured.err and Image.open(out).size == (96, 48)  # the preset's working size
    assert len(list((tmp_path / "cache").glob("tiny-dit-untrained-*/paired.json"))) == 1


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--data", "{tmp}/nope"], "data folder {tmp}/nope does not exist or is not a folder"),
        (["train", "--data", "{tmp}"], "no image pairs found in {tmp} (train split)"),
        (["train", "--data", "{tmp}", "--config", "sd15"], "preset 'sd15' (kind 'stable-diffusion') is not a paired"),
        (["translate", "--image", "{tmp}/missing.png"], "cannot read image 'missing.png'"),
        (["translate", "--checkpoint", "{tmp}"], "is not a paired checkpoint: it has no paired.json"),
        (["translate", "--preset", "face2comics"], "preset 'face2comics': no trained checkpoint at"),
        (["translate", "--preset", "tiny"], "preset 'tiny' is a 'stable-diffusion' preset, not a paired"),
        (["eval", "--checkpoint", "{tmp}/none", "--data", "{tmp}"], "checkpoint folder {tmp}/none does not exist"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, tiny_clip, ab_data, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if argv[0] == "train":
        if "--config" not in argv:
            argv += ["--config", str(write_preset(tmp_path / "p.toml", tiny_clip))]
        argv += ["--out", str(tmp_path / "out")]
    if argv[0] == "translate":
        argv += ["--out", str(tmp_path / "o.png")] + ([] if "--image" in argv else ["--image", str(ab_data / "p0.png")])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message.format(tmp=tmp_path) in err[-1]
