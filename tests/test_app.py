"""The app, launched in-process and driven through gradio_client like a remote user."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dit_translate import api
from dit_translate.encoders import fit_square, normalize
from dit_translate.store import default_store

gradio_client = pytest.importorskip("gradio_client")

ROOT = Path(__file__).resolve().parent.parent
SD15_HINT = "hf download stable-diffusion-v1-5/stable-diffusion-v1-5"


@pytest.fixture(scope="module")
def system_tmp(tmp_path_factory):
    """The system temp dir of this module's app (``tempfile.gettempdir()``; ``app.output_root()`` is in it)."""
    return tmp_path_factory.mktemp("system-tmp")


@pytest.fixture(scope="module")
def gradio_dirs(system_tmp):
    """Gradio's cache folders for this module: uploads and their copies, and the cached examples."""
    dirs = {"GRADIO_TEMP_DIR": system_tmp / "gradio", "GRADIO_EXAMPLES_CACHE": system_tmp / "gradio-examples"}
    for folder in dirs.values():
        folder.mkdir()
    return dirs


@pytest.fixture(scope="module")
def demo(gradio_dirs, system_tmp):
    import app

    with pytest.MonkeyPatch.context() as mp:
        for name, folder in gradio_dirs.items():
            mp.setenv(name, str(folder))
        mp.setattr(tempfile, "tempdir", str(system_tmp))
        demo = app.build_demo()
        demo.queue(max_size=8).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        yield demo
        demo.close()


@pytest.fixture(scope="module")
def client(demo):
    return gradio_client.Client(demo.local_url, verbose=False)


def _edit(client, image, prompt="a comic drawing", methods=("sdedit", "correct", "pnp"), strength=0.6):
    return client.predict(
        gradio_client.handle_file(str(image)) if image is not None else None,
        prompt, "tiny", strength, 6, 5.0, 0, list(methods), "released", 0, api_name="/edit",
    )


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _clip_image(clip, image):
    """The open_clip model's image embedding, computed here without ``ClipEncoder.embed_image``."""
    with torch.no_grad():
        return clip.model.encode_image(normalize(fit_square(image.float(), clip.size), clip.mean, clip.std))[0].numpy()


def _clip_text(clip, text):
    with torch.no_grad():
        return clip.model.encode_text(clip.tokenizer([text]))[0].numpy()


def _honest(note):
    """A tiny-world result says which weights made it and how to get full models."""
    return ("UNTRAINED random weights" in note or "tiny world" in note) and "choose" in note


def test_edit_tab_returns_side_by_side_results(client):
    gallery, table, files, note = _edit(client, "assets/examples/chelsea.jpg")
    captions = [item["caption"] for item in gallery]
    assert captions == ["Source", "SDEdit", "Correction (released)", "PnP"]
    src = Image.open(gallery[0]["image"])
    for item in gallery:
        img = Image.open(item["image"])
        assert img.size == src.size and abs(img.width / img.height - 451 / 300) < 0.05  # input aspect ratio
    rows = {r[0]: r for r in table["data"]}
    # SDEdit runs int(6 * 0.6) = 3 steps; the released correction its sampler's 6 - int(6 * 0.4) = 4, + 1 source pass
    assert rows["SDEdit"][2] == 2 * 3 and rows["Correction (released)"][2] == 2 * 4 + 1
    assert rows["PnP"][2] > rows["Correction (released)"][2]
    assert all(-1 <= r[3] <= 1 for r in table["data"])
    assert [os.path.basename(f) for f in files] == ["sdedit.png", "correct.png", "pnp.png"]
    assert _honest(note) and SD15_HINT in note


def test_edit_tab_clip_score_is_the_cosine_with_the_presets_clip(client):
    _, table, _, note = _edit(client, "assets/examples/coffee.jpg", methods=("sdedit",))
    clip = default_store().guidance("tiny").clips()[0]
    untrained = clip.name in default_store().guidance("tiny").untrained
    column = "CLIP text score" + (" (UNTRAINED CLIP)" if untrained else "")
    assert table["headers"][-1] == column and ("UNTRAINED random clip" in note) == untrained
    # the oracle: the same SDEdit run in-process, scored with the encoder's own embeddings
    result = api.edit(api.EditRequest("sdedit", "a comic drawing", strength=0.6, steps=6, guidance=5.0, seed=0),
                      "assets/examples/coffee.jpg", preset="tiny")
    expected = _cos(_clip_image(clip, result.image), _clip_text(clip, "a comic drawing"))
    assert table["data"][0][-1] == pytest.approx(expected, abs=1.5e-3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"image": None}, "Upload an image first"),
        ({"prompt": "  "}, "a prompt is required"),
        ({"methods": ()}, "Choose at least one method"),
        ({"image": "tests/conftest.py"}, "cannot read image"),
    ],
)
def test_bad_inputs_are_clear_errors_and_the_app_keeps_serving(client, tmp_path, kwargs, message):
    args = {"image": "assets/examples/coffee.jpg", **kwargs}
    if args["image"] == "tests/conftest.py":
        fake = tmp_path / "fake.png"
        fake.write_bytes(b"definitely not a png")
        args["image"] = fake
    with pytest.raises(Exception, match=message):
        _edit(client, **args)
    gallery, _, _, _ = _edit(client, "assets/examples/coffee.jpg", methods=("sdedit",))
    assert [g["caption"] for g in gallery] == ["Source", "SDEdit"]


@pytest.mark.parametrize(
    "error",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
     RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")],
)
def test_out_of_memory_is_a_clear_error_and_the_app_keeps_serving(client, monkeypatch, error):
    def run_out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(api, "edit", run_out_of_memory)
    monkeypatch.setattr(api, "translate", run_out_of_memory)
    with pytest.raises(Exception, match="Out of memory: try a smaller image, fewer steps"):
        _edit(client, "assets/examples/coffee.jpg", methods=("sdedit",))
    with pytest.raises(Exception, match="Out of memory"):
        client.predict(gradio_client.handle_file("assets/examples/coffee.jpg"), "tiny-dit", 2, 2.0, 0,
                       api_name="/translate")
    monkeypatch.undo()
    gallery, _, _, _ = _edit(client, "assets/examples/coffee.jpg", methods=("sdedit",))
    assert [g["caption"] for g in gallery] == ["Source", "SDEdit"]


def _guide(client, image, mode="text", text="a comic drawing", style=None, steps=10, source_text=""):
    return client.predict(
        gradio_client.handle_file(str(image)) if image is not None else None,
        mode, text, source_text, gradio_client.handle_file(str(style)) if style else None,
        "tiny", steps, 3.0, 0, 0.4, 0.2, 0.7, 0.02, 1, 200.0, False, api_name="/guide",
    )


@pytest.mark.parametrize("mode", ["text", "image"])
def test_guided_tab_shows_ddim_next_to_agg(client, mode):
    style = "assets/examples/coffee.jpg" if mode == "image" else None
    pair, gallery, table, files, note = _guide(client, "assets/examples/chelsea.jpg", mode=mode, style=style,
                                               source_text="a photo")
    assert [g["caption"] for g in gallery] == ["Source", "DDIM (unguided)", "AGG"]
    left, right = (Image.open(p["path"] if isinstance(p, dict) else p) for p in pair)
    assert left.size == right.size == Image.open(gallery[0]["image"]).size
    ddim, agg = table["data"]
    assert agg[2] == ddim[2]  # the MCG step reuses its forward pass: same U-Net evaluations...
    from dit_translate.methods.agg import agg_phases

    assert ddim[3] == 0 and agg[3] == agg_phases(10).count("edit") >= 1  # ...plus one backprop per edit step
    assert len(files) == 2 and _honest(note)
    clip_columns = [h.split(" (")[0] for h in table["headers"][6:]]
    assert clip_columns == (["CLIP text score", "CLIP direction score"] if mode == "text" else [])
    assert all(-1 <= v <= 1 for row in table["data"] for v in row[6:])


def test_guided_tab_needs_a_style_image_in_image_mode(client):
    with pytest.raises(Exception, match="needs a style image"):
        _guide(client, "assets/examples/chelsea.jpg", mode="image")
    with pytest.raises(Exception, match="AGG needs a target"):
        _guide(client, "assets/examples/chelsea.jpg", text="  ")


def test_paired_tab_translates_at_the_input_aspect_ratio(client):
    pair, table, file, note = client.predict(
        gradio_client.handle_file("assets/examples/coffee.jpg"), "tiny-dit", 4, 2.0, 0, api_name="/translate"
    )
    before, after = (Image.open(p["path"] if isinstance(p, dict) else p) for p in pair)
    assert before.size == after.size and abs(after.width / after.height - 600 / 400) < 0.05
    (row,) = table["data"]
    assert row[2] == 2 * 4  # 4 DDIM steps, both CFG branches
    assert Image.open(file).size == after.size
    assert _honest(note) and "presets/face2comics.toml" in note
    # the oracle: the same translation in-process, compared with the source through the checkpoint's CLIP
    result = api.translate("assets/examples/coffee.jpg", preset="tiny-dit", steps=4, guidance=2.0, seed=0)
    clip = default_store().get_paired("tiny-dit").models.clip
    expected = _cos(_clip_image(clip, result.image), _clip_image(clip, result.extras["source"]))
    assert table["headers"][4].startswith("CLIP similarity to source") and row[4] == pytest.approx(expected, abs=1.5e-3)
    assert ("UNTRAINED" in table["headers"][4]) == result.extras["clip_untrained"]


def test_examples_are_cached_lazily_in_gradios_cache_folders(client, gradio_dirs):
    before = set(os.listdir(ROOT))
    start = time.monotonic()
    first = client.predict(0, api_name="/translate_example")  # computed on first use...
    computed = time.monotonic() - start
    start = time.monotonic()
    again = client.predict(0, api_name="/translate_example")  # ...then served from the cache
    assert again == first and time.monotonic() - start < computed
    (row,) = first[1]["data"]
    d = json.loads((ROOT / "assets/tiny/dit/paired.json").read_text())["defaults"]
    assert row[2] == d["steps"] * (1 if d["guidance"] == 1 else 2)  # the tiny-dit defaults' NFE (CFG step: 2)
    cache = gradio_dirs["GRADIO_EXAMPLES_CACHE"]
    assert any(cache.rglob("log.csv")) and any(cache.rglob("paired.png"))
    import app

    assert any(app.output_root().glob("run-*/paired.png"))  # the download, saved in the app's output folder
    assert set(os.listdir(ROOT)) == before  # nothing written into the project


def test_every_tab_has_full_example_rows_and_the_about_tab_links_the_papers(client):
    config = client.config
    deps = {d["api_name"]: d for d in config["dependencies"]}
    components = {c["id"]: c for c in config["components"]}
    for name in ("translate", "edit", "guide"):
        example = deps[f"{name}_example"]  # clicking an example: every input is filled, then the cached result
        (fill,) = [d for d in deps.values() if d["inputs"] == example["inputs"] and d is not example]
        assert fill["outputs"] == deps[name]["inputs"] and example["outputs"] == deps[name]["outputs"]
        assert len(components[example["inputs"][0]]["props"]["samples"]) >= 2
    text = "\n".join(str(c["props"].get("value", "")) for c in components.values() if c["type"] == "markdown")
    for url in ("arxiv.org/abs/2108.01073", "doi.org/10.1109/JAS.2024.124800", "arxiv.org/abs/2211.12572",
                "arxiv.org/abs/2306.04396", "arxiv.org/abs/2505.16001", "arxiv.org/abs/2212.09748"):
        assert url in text
    assert "Device: `cpu`" in text
    for folder in ("sd", "clip", "dit", "dino"):  # each tiny-world card is shown, or said to be missing
        card = ROOT / "assets" / "tiny" / folder / "README.md"
        assert (f"assets/tiny/{folder}` holds no model card" in text) != card.is_file()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_app_py_serves_where_gradios_environment_says(tmp_path):
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_TEMP_DIR": str(tmp_path / "tmp"), "GRADIO_EXAMPLES_CACHE": str(tmp_path / "examples")}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as r:
                    config = json.load(r)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "app.py did not start"
                time.sleep(1)
        assert config["max_file_size"] == 20 * 1024 * 1024
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_about_tab_renders_a_model_card_without_its_front_matter(tmp_path, monkeypatch, gradio_dirs):
    import app

    folder = tmp_path / "sd"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "samples.png")
    (folder / "README.md").write_text("---\nlicense: cc0-1.0\n---\n# Tiny SD card\n\n![samples](samples.png)\n\nLimits.\n")
    monkeypatch.setattr(app.about, "tiny_model_cards", lambda: [("Tiny SD", folder), ("Tiny DiT", tmp_path / "dit")])
    for name, value in gradio_dirs.items():
        monkeypatch.setenv(name, str(value))
    config = app.build_demo().get_config_file()
    markdown = [str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown"]
    assert "# Tiny SD card" in markdown and "Limits." in markdown  # the card, split around its image
    assert not any("cc0-1.0" in m for m in markdown)
    assert any(f"`{tmp_path / 'dit'}` holds no model card" in m for m in markdown)
    (card_image,) = [c["props"] for c in config["components"] if c["type"] == "image" and c["props"].get("value")]
    assert card_image["label"] == "samples.png" and Image.open(card_image["value"]["path"]).getpixel((0, 0)) == (255, 0, 0)
