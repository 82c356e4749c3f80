"""The CLI contract: JSON output, output files, and one-line errors with a non-zero exit."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from dit_translate.cli import main
from dit_translate.presets import load_preset


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "cat.jpg"
    Image.fromarray(data.chelsea()).save(path)
    return path


def test_edit_json_and_output(tmp_path, photo_file, random_sd_folder, capsys):
    out = tmp_path / "out.png"
    code = main(["edit", "--method", "correct", "--image", str(photo_file), "--prompt", "a comic drawing",
                 "--model", str(random_sd_folder), "--strength", "0.5", "--steps", "6", "--output-size", "working", "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["method"] == "correct-released" and payload["nfe"] == 2 * 3 + 1
    assert payload["device"] == "cpu" and 0 <= payload["metrics"]["ssim_to_source"] <= 1
    w, h = payload["size"]
    # --model without --size: the model's own size (U-Net sample_size 8 x VAE factor 2 = 16), not the tiny preset's;
    # the aspect ratio kept up to the VAE factor
    side = 16
    assert side != load_preset("tiny").size
    assert Image.open(out).size == (w, h) and w == side and h % 2 == 0 and abs(h - side * 300 / 451) <= 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["--image", "missing.png"], "cannot read image 'missing.png'"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "sd15"], "HF_HUB_OFFLINE=1 forbids downloading"),
        (["--strength", "1.5"], "strength must be in (0.0, 1.0], got 1.5"),
        (["--strength", "nan"], "strength must be in"),
        (["--prompt", "   "], "a prompt is required"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, photo_file, capsys, args, message):
    base = {"--image": str(photo_file), "--prompt": "a comic drawing", "--out": str(tmp_path / "o.png")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = ["edit", "--method", "sdedit"] + [x for kv in base.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "o.png").exists()


def test_steps_below_one_rejected_by_argparse(photo_file, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dit_translate", "edit", "--method", "sdedit", "--image", str(photo_file),
         "--prompt", "x", "--steps", "0", "--out", str(tmp_path / "o.png")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0 and "must be at least 1" in proc.stderr and "Traceback" not in proc.stderr


def test_unreadable_image_in_a_real_process_has_no_traceback(tmp_path):
    bad = tmp_path / "fake.png"
    bad.write_text("not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "dit_translate", "edit", "--method", "pnp", "--image", str(bad),
         "--prompt", "x", "--out", str(tmp_path / "o.png")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[-1]]
    assert "fake.png" in proc.stderr


def test_presets_command_lists_availability(capsys):
    assert main(["presets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sd15"]["available"] is False and rows["tiny"]["available"] is True
    assert rows["tiny"]["untrained"] is False  # the shipped tiny world
    assert (rows["sd15"]["state"], rows["tiny"]["state"]) == ("not here", "here")  # offline, not cached
    assert rows["tiny-dit"]["kind"] == "dit" and rows["tiny-dit"]["state"] == "here"  # paired presets are listed


def test_presets_online_say_the_weights_download_on_first_use(capsys, monkeypatch):
    """Never "available" for weights that are not here: online and not cached they read "downloads"."""
    from dit_translate import guidance, weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(weights, "cached_snapshot", lambda preset: None)
    monkeypatch.setattr(guidance, "_cached", lambda repo, files: False)
    assert main(["presets", "--json"]) == 0
    sd15 = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["sd15"]
    assert sd15["state"] == "downloads" and sd15["downloads"] is True
    assert sd15["detail"].startswith("not cached: downloads stable-diffusion-v1-5/stable-diffusion-v1-5")
