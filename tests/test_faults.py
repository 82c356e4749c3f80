"""Faults: training SIGKILLed (at a random step, and during a save) and resumed; corrupt, truncated and
missing weights; a full disk; running out of memory. Each ends in one clear error or an exact recovery.

The killed runs are real processes (``tests/train_worker.py``): the tiny world's VAE stage and the paired
DiT trainer through ``python -m dit_translate train``'s code. Uninterrupted references and resumes run in
this process with the same torch thread count, so "identical" means bit for bit.
"""

from __future__ import annotations

import csv
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from test_paired_support import ab_data, tiny_clip, write_preset  # noqa: F401 - fixtures
from train_worker import SAVE_EVERY, train_tiny

from dit_translate import api
from dit_translate.errors import (
    CorruptWeightsError,
    MemoryExhaustedError,
    MissingWeightsError,
)
from dit_translate.files import WriteError
from dit_translate.paired.checkpoint import STATE_FILE
from dit_translate.paired.loading import load_paired
from dit_translate.paired.train import train
from dit_translate.presets import load_preset
from dit_translate.store import ModelStore, default_store
from dit_translate.tiny.checkpoint import CHECKPOINT_NAME, save_checkpoint
from dit_translate.training import load_state, save_state

WORKER = Path(__file__).with_name("train_worker.py")
TINY_STEPS = 24
PAIRED_STEPS = 16
KILL_SEED = 7
WAIT = 240.0
PHOTO = "assets/examples/coffee.jpg"
TIMING_COLUMNS = {"seconds", "samples_per_s"}


# ---- SIGKILL and resume ---------------------------------------------------------------------------
def _worker(tmp_path: Path, *args: str) -> subprocess.Popen:
    log = (tmp_path / "worker.log").open("w")
    return subprocess.Popen([sys.executable, str(WORKER), *args, "--threads", str(torch.get_num_threads())],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _logged_step(log: Path) -> int:
    """The last complete step in a loss.csv (0 if none yet)."""
    if not log.exists():
        return 0
    rows = [r for r in csv.reader(log.read_text().splitlines()) if r][1:]
    steps = [int(float(r[0])) for r in rows if r[0].replace(".", "").isdigit()]
    return max(steps, default=0)


def _kill_when(proc: subprocess.Popen, ready, tmp_path: Path) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it exits first or takes longer than ``WAIT``."""
    deadline = time.monotonic() + WAIT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"worker ended or stalled before the kill:\n{(tmp_path / 'worker.log').read_text()[-3000:]}")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _random_step(steps: int) -> int:
    """A step after the first checkpoint and before the last (seeded)."""
    return random.Random(KILL_SEED).randint(SAVE_EVERY + 1, steps // 2)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))  # reads (and so validates) every tensor


def _assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta), [k for k in ta if not torch.equal(ta[k], tb[k])]


def _losses(folder: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader((folder / "loss.csv").open()))
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def _tiny_step(work: Path) -> int:
    return load_state(work / CHECKPOINT_NAME)["step"]


def _assert_same_tiny_run(reference: Path, work: Path) -> None:
    _assert_same_tensors(reference / CHECKPOINT_NAME, work / CHECKPOINT_NAME)  # weights, Adam moments, RNG
    _assert_same_tensors(reference / "final" / "diffusion_pytorch_model.safetensors",
                         work / "final" / "diffusion_pytorch_model.safetensors")
    assert _losses(reference) == _losses(work) and len(_losses(work)) == TINY_STEPS
    assert not list(work.rglob("*.tmp"))


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("tiny") / "reference"
    train_tiny(work, TINY_STEPS)
    return work


def test_tiny_training_sigkilled_at_a_random_step_resumes_bit_identically(tmp_path, tiny_reference):
    work = tmp_path / "run"
    proc = _worker(tmp_path, "tiny", str(work), "--steps", str(TINY_STEPS))
    _kill_when(proc, lambda: _logged_step(work / "loss.csv") >= _random_step(TINY_STEPS), tmp_path)
    assert SAVE_EVERY <= _tiny_step(work) < TINY_STEPS
    train_tiny(work, TINY_STEPS)
    _assert_same_tiny_run(tiny_reference, work)


def test_tiny_training_sigkilled_during_a_save_keeps_the_previous_checkpoint(tmp_path, tiny_reference):
    work, marker = tmp_path / "run", tmp_path / "stalled"
    proc = _worker(tmp_path, "tiny", str(work), "--steps", str(TINY_STEPS), "--stall-save", "2",
                   "--marker", str(marker))
    _kill_when(proc, marker.exists, tmp_path)
    partial = Path(marker.read_text())
    assert partial.parent == work and partial.name.startswith(f".{CHECKPOINT_NAME}.") and partial.suffix == ".tmp"
    with pytest.raises(SafetensorError):
        _tensors(partial)  # the save really was cut half way...
    assert _tiny_step(work) == SAVE_EVERY and _tensors(work / CHECKPOINT_NAME)  # ...and "latest" is intact
    train_tiny(work, TINY_STEPS)
    assert not partial.exists()  # the stale temporary was cleared on resume
    _assert_same_tiny_run(tiny_reference, work)


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory, tiny_clip, ab_data):
    """A tiny DiT preset (EMA, cosine LR, CLIP loss, samples) and its uninterrupted run."""
    root = tmp_path_factory.mktemp("paired")
    config = write_preset(root / "p.toml", tiny_clip, train={
        "steps": PAIRED_STEPS, "save_every": SAVE_EVERY, "sample_every": 8, "log_every": 1, "ema_decay": 0.9,
        "lr_schedule": "cosine", "warmup_steps": 2})
    train(load_preset(str(config)), ab_data, root / "reference", progress=False)
    return config, root / "reference"


def _assert_same_paired_run(reference: Path, out: Path) -> None:
    _assert_same_tensors(reference / STATE_FILE, out / STATE_FILE)  # model, EMA, Adam moments, RNG
    assert load_state(reference / STATE_FILE)["recipe"]["lr_schedulers"] == load_state(out / STATE_FILE)["recipe"][
        "lr_schedulers"]
    _assert_same_tensors(reference / "model" / "diffusion_pytorch_model.safetensors",
                         out / "model" / "diffusion_pytorch_model.safetensors")
    last = f"step_{PAIRED_STEPS:07d}.png"
    assert (reference / "samples" / last).read_bytes() == (out / "samples" / last).read_bytes()
    assert _losses(reference) == _losses(out) and len(_losses(out)) == PAIRED_STEPS
    assert load_paired(out).step == PAIRED_STEPS
    assert not list(out.rglob("*.tmp"))


def test_paired_training_sigkilled_at_a_random_step_resumes_bit_identically(tmp_path, paired_run, ab_data):
    config, reference = paired_run
    out = tmp_path / "run"
    proc = _worker(tmp_path, "paired", str(config), str(ab_data), str(out))
    _kill_when(proc, lambda: _logged_step(out / "loss.csv") >= _random_step(PAIRED_STEPS), tmp_path)
    state_step = load_state(out / STATE_FILE)["step"]
    assert SAVE_EVERY <= state_step < PAIRED_STEPS
    assert load_paired(out).step in (state_step - SAVE_EVERY, state_step)  # the exported model loads too
    result = train(load_preset(str(config)), ab_data, out, progress=False)
    assert result.resumed_from == state_step
    _assert_same_paired_run(reference, out)


def test_paired_training_sigkilled_during_a_save_keeps_the_previous_state(tmp_path, paired_run, ab_data):
    config, reference = paired_run
    out, marker = tmp_path / "run", tmp_path / "stalled"
    proc = _worker(tmp_path, "paired", str(config), str(ab_data), str(out), "--stall-save", "2",
                   "--marker", str(marker))
    _kill_when(proc, marker.exists, tmp_path)
    partial = Path(marker.read_text())
    assert partial.parent == out and partial.name.startswith(f".{STATE_FILE}.")
    assert load_state(out / STATE_FILE)["step"] == SAVE_EVERY and load_paired(out).step == SAVE_EVERY
    assert train(load_preset(str(config)), ab_data, out, progress=False).resumed_from == SAVE_EVERY
    assert not partial.exists()
    _assert_same_paired_run(reference, out)


# ---- corrupt, truncated and missing weights ---------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:40] = b"#" * 32
    path.write_bytes(bytes(data))


DAMAGE = {"truncated": _truncate, "garbled header": _garble_header, "empty": lambda p: p.write_bytes(b"")}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_weights_are_one_error_naming_the_file(tmp_path, random_sd_folder, damage):
    folder = shutil.copytree(random_sd_folder, tmp_path / "pipe")
    bad = folder / "unet" / "diffusion_pytorch_model.safetensors"
    DAMAGE[damage](bad)
    store = ModelStore(device="cpu")
    with pytest.raises(CorruptWeightsError, match=rf"cannot load preset 'tiny' from .*: the weights file "
                                                   rf"{re.escape(str(bad))} is truncated or corrupt \(Error while "
                                                   r"deserializing header"):
        store.get("tiny", model=str(folder))
    assert isinstance(CorruptWeightsError("x"), MissingWeightsError)  # what the app and the CLI report
    assert store.get("tiny", model=str(random_sd_folder)).models.unet is not None  # the store still loads


def test_damaged_paired_checkpoint_and_guidance_clip_name_the_file(tmp_path, paired_run, tiny_clip):
    _, reference = paired_run
    folder = shutil.copytree(reference, tmp_path / "ckpt")
    bad = folder / "model" / "diffusion_pytorch_model.safetensors"
    _truncate(bad)
    with pytest.raises(CorruptWeightsError, match=rf"the paired checkpoint from {re.escape(str(folder))}: the "
                                                   rf"weights file {re.escape(str(bad))} is truncated or corrupt"):
        ModelStore(device="cpu").get_paired(checkpoint=folder)
    from dit_translate.guidance import load_clip

    clip = shutil.copytree(tiny_clip, tmp_path / "clip")
    _garble_header(clip / "open_clip_model.safetensors")
    weights = re.escape(str(clip / "open_clip_model.safetensors"))
    with pytest.raises(CorruptWeightsError, match=rf"guidance CLIP of preset 'tiny' from {re.escape(str(clip))}: "
                                                   rf"the weights file {weights} is truncated or corrupt"):
        load_clip(f"local-dir:{clip}", load_preset("tiny"))


def _error_lines(capsys) -> list[str]:
    """The CLI's error lines on stderr (progress bars aside); fails on a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error")]


@pytest.mark.parametrize("case", ["missing folder", "truncated weights"])
def test_cli_reports_bad_weights_in_one_line_and_writes_nothing(tmp_path, random_sd_folder, capsys, case):
    from dit_translate.cli import main

    if case == "missing folder":
        preset = tmp_path / "mine.toml"
        preset.write_text('name = "mine"\nkind = "stable-diffusion"\nmodel = "./gone"\nsize = 64\n')
        args, named = ["--preset", str(preset)], tmp_path / "gone"
    else:
        folder = shutil.copytree(random_sd_folder, tmp_path / "pipe")
        named = folder / "vae" / "diffusion_pytorch_model.safetensors"
        _truncate(named)
        args = ["--model", str(folder)]
    out = tmp_path / "out.png"
    code = main(["edit", "--method", "sdedit", "--image", PHOTO, "--prompt", "a comic", "--steps", "2",
                 "--out", str(out), *args])
    err = _error_lines(capsys)
    assert code == 2 and len(err) == 1 and str(named) in err[0], err
    assert not out.exists() and list(tmp_path.glob("*.png")) == []


# ---- a full disk ------------------------------------------------------------------------------------
def _disk_full_after_half(module, error: Exception):
    """A ``save_file`` for ``module`` that writes half its file, then fails like a full disk."""
    from safetensors.torch import save

    def save_file(tensors, filename, metadata=None):
        data = save(tensors, metadata=metadata)
        Path(filename).write_bytes(data[: len(data) // 2])
        raise error

    return save_file


STORAGE_FULL = {
    "OSError": OSError(28, "No space left on device"),
    "safetensors": SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                                   '"No space left on device" })'),
}


@pytest.mark.parametrize("error", STORAGE_FULL)
@pytest.mark.parametrize("writer", ["tiny checkpoint", "paired training state"])
def test_a_full_disk_during_a_checkpoint_save_names_it_and_keeps_the_previous_one(tmp_path, monkeypatch, writer,
                                                                                  error):
    import dit_translate.training as training

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    tiny = writer == "tiny checkpoint"
    path = tmp_path / (CHECKPOINT_NAME if tiny else STATE_FILE)

    def save(step: int) -> None:
        if tiny:
            save_checkpoint(path, step, model, optimizer)
        else:
            save_state(path, {"step": step, "model": model.state_dict()})

    save(1)
    before = path.read_bytes()
    monkeypatch.setattr(training, "save_file", _disk_full_after_half(training, STORAGE_FULL[error]))
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(path))}: no space left on device$"):
        save(2)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_full_disk_while_exporting_a_checkpoint_folder_leaves_the_old_model(tmp_path, monkeypatch, paired_run):
    from dit_translate.paired.checkpoint import write_checkpoint

    _, reference = paired_run
    folder = shutil.copytree(reference, tmp_path / "ckpt")
    models = load_paired(folder)
    before = {p.name: p.read_bytes() for p in (folder / "model").iterdir()}

    def full_disk(save_directory, **_kw):
        Path(save_directory).mkdir(parents=True, exist_ok=True)
        (Path(save_directory) / "config.json").write_text("{")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(models.net, "save_pretrained", full_disk)
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(folder / 'model'))}: no space left on "
                                         r"device$"):
        write_checkpoint(folder, kind="dit", net=models.net, spec=models.spec, image_size=models.image_size,
                         step=99, preset="p")
    assert {p.name: p.read_bytes() for p in (folder / "model").iterdir()} == before
    assert not list(folder.glob(".*.tmp")) and load_paired(folder).step == PAIRED_STEPS


def test_a_replaced_folder_is_swapped_in_whole_or_not_at_all(tmp_path):
    """``files.replaced_folder`` (the tiny world's exports): a failed build leaves the old folder as it was,
    a finished one replaces it whole, and temporaries of a killed build are cleared."""
    from dit_translate.files import replaced_folder

    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    (tmp_path / ".model.dead.tmp").mkdir()  # what a killed build left
    (tmp_path / ".other.dead.tmp").mkdir()  # another folder's: not ours to remove
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(out))}: no space left on device$"):
        with replaced_folder(out) as tmp:
            tmp.mkdir()
            (tmp / "new.txt").write_text("half")
            raise OSError(28, "No space left on device")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.dead.tmp", "model"]
    with replaced_folder(out) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"] and (out / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.dead.tmp", "model"]


def test_a_published_folder_keeps_the_first_complete_copy_and_no_partial_one(tmp_path):
    """``files.publish_folder`` (the UNTRAINED fallback caches): a failed build leaves nothing; when another
    process published first, its folder stays and ours is dropped."""
    from dit_translate.files import publish_folder

    folder = tmp_path / "cache"

    def broken(tmp):
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        publish_folder(folder, broken)
    assert list(tmp_path.iterdir()) == []

    def late(tmp):  # another process publishes while this one builds
        folder.mkdir()
        (folder / "theirs").write_text("first")
        tmp.mkdir()
        (tmp / "ours").write_text("second")

    assert publish_folder(folder, late) == folder
    assert [p.name for p in folder.iterdir()] == ["theirs"] and [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_cli_output_on_a_full_disk_is_one_error_naming_it_and_no_file(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from dit_translate.cli import main

    def full_disk(self, fp, format=None, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    out = tmp_path / "result.png"
    code = main(["edit", "--method", "sdedit", "--image", PHOTO, "--prompt", "a comic", "--steps", "2",
                 "--out", str(out)])
    assert code == 2 and _error_lines(capsys) == [f"error: cannot save image 'result.png' in folder '{tmp_path}': no space left on "
                                 "device"]
    assert list(tmp_path.iterdir()) == []


def test_app_output_on_a_full_disk_is_a_clear_error_and_no_file(tmp_path, monkeypatch):
    import tempfile

    from PIL import Image

    import app

    def full_disk(self, fp, format=None, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(app.gr.Error) as info:
        app.run_paired(PHOTO, "tiny-dit", 2, 2.0, 0, progress=lambda *_a, **_k: None)
    root = tmp_path / app.OUTPUT_FOLDER
    assert re.fullmatch(rf"cannot save image 'source.png' in folder '{re.escape(str(root))}/run-\w+': no space "
                        r"left on device", info.value.message)
    assert list(root.iterdir()) == []  # the request's folder is removed with its partial file


def test_app_without_a_writable_output_folder_is_a_clear_error(tmp_path, monkeypatch):
    import app

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setattr(app, "output_root", lambda: tmp_path / "file" / app.OUTPUT_FOLDER)
    with pytest.raises(app.gr.Error) as info:
        app.run_paired(PHOTO, "tiny-dit", 2, 2.0, 0, progress=lambda *_a, **_k: None)
    assert info.value.message == f"cannot create an output folder in '{tmp_path / 'file' / app.OUTPUT_FOLDER}': not a directory"


# ---- out of memory ------------------------------------------------------------------------------------
def _allocate_four_terabytes(*_args, **_kwargs):
    return torch.empty(1 << 42, dtype=torch.uint8)  # a real allocator failure on any machine without 4 TB


def _cuda_out_of_memory(*_args, **_kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (GPU 0; 23.65 GiB total capacity)")


@pytest.mark.parametrize("oom", [_allocate_four_terabytes, _cuda_out_of_memory], ids=["cpu allocator", "cuda"])
def test_out_of_memory_inside_a_method_is_one_clear_error_and_the_next_request_runs(monkeypatch, oom):
    unet = default_store().get("tiny").models.unet
    request = api.EditRequest(method="sdedit", prompt="a comic drawing", steps=2, strength=0.6)
    monkeypatch.setattr(unet, "forward", oom)
    with pytest.raises(MemoryExhaustedError, match=r"^not enough memory for sdedit with preset 'tiny' \(.*"
                                                   r"\); try fewer steps, a smaller image or a smaller preset$"):
        api.edit(request, PHOTO)
    monkeypatch.undo()
    assert api.edit(request, PHOTO).image.shape[-1] == load_preset("tiny").size  # the next request is served


def test_other_runtime_errors_are_not_reported_as_memory(monkeypatch):
    unet = default_store().get("tiny").models.unet

    def broken(*_args, **_kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(unet, "forward", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as err:
        api.edit(api.EditRequest(method="sdedit", prompt="a comic drawing", steps=2), PHOTO)
    assert not isinstance(err.value, MemoryExhaustedError)


@pytest.fixture(scope="module")
def app_client():
    gradio_client = pytest.importorskip("gradio_client")
    import app

    demo = app.build_demo()
    _, url, _ = demo.queue(max_size=4).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield gradio_client.Client(url, verbose=False)
    demo.close()


def _app_edit(client):
    from gradio_client import handle_file

    return client.predict(handle_file(PHOTO), "a comic drawing", "tiny", 0.6, 2, 5.0, 0, ["sdedit"], "released", 20,
                          api_name="/edit")


def test_app_keeps_serving_after_an_out_of_memory_request(app_client, monkeypatch):
    monkeypatch.setattr(default_store().get("tiny").models.unet, "forward", _allocate_four_terabytes)
    with pytest.raises(Exception):  # noqa: B017 - the message is the next test's subject
        _app_edit(app_client)
    monkeypatch.undo()
    gallery, _, _, _ = _app_edit(app_client)
    assert [g["caption"] for g in gallery] == ["Source", "SDEdit"]


def test_app_shows_the_out_of_memory_message(app_client, monkeypatch):
    monkeypatch.setattr(default_store().get("tiny").models.unet, "forward", _allocate_four_terabytes)
    with pytest.raises(Exception, match="not enough memory for sdedit with preset 'tiny'"):
        _app_edit(app_client)
