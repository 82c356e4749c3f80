"""The app, launched in-process and driven through gradio_client like a remote user."""

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client():
    import app

    demo = app.build_demo()
    _, url, _ = demo.queue(max_size=8).launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield gradio_client.Client(url, verbose=False)
    demo.close()


def _edit(client, image, prompt="a comic drawing", methods=("sdedit", "correct", "pnp"), strength=0.6):
    return client.predict(
        gradio_client.handle_file(str(image)) if image is not None else None,
        prompt, "tiny", strength, 6, 5.0, 0, list(methods), "released", 20, api_name="/edit",
    )


def test_edit_tab_returns_side_by_side_results(client):
    gallery, table, files = _edit(client, "assets/examples/chelsea.jpg")
    captions = [item["caption"] for item in gallery]
    assert captions == ["Source", "SDEdit", "Correction (released)", "PnP"]
    src = Image.open(gallery[0]["image"])
    for item in gallery:
        img = Image.open(item["image"])
        assert img.size == src.size and abs(img.width / img.height - 451 / 300) < 0.05  # input aspect ratio
    rows = {r[0]: r for r in table["data"]}
    assert rows["Correction (released)"][2] == rows["SDEdit"][2] + 1  # one extra U-Net pass
    assert rows["PnP"][2] > rows["Correction (released)"][2]
    assert all(-1 <= r[3] <= 1 for r in table["data"])
    assert len(files) == 3


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
    gallery, _, _ = _edit(client, "assets/examples/coffee.jpg", methods=("sdedit",))
    assert [g["caption"] for g in gallery] == ["Source", "SDEdit"]


def _guide(client, image, mode="text", text="a comic drawing", style=None, steps=10):
    return client.predict(
        gradio_client.handle_file(str(image)) if image is not None else None,
        mode, text, "", gradio_client.handle_file(str(style)) if style else None,
        "tiny", steps, 3.0, 0, 0.4, 0.2, 0.7, 0.02, 1, 200.0, False, api_name="/guide",
    )


@pytest.mark.parametrize("mode", ["text", "image"])
def test_guided_tab_shows_ddim_next_to_agg(client, mode):
    style = "assets/examples/coffee.jpg" if mode == "image" else None
    pair, gallery, table, files = _guide(client, "assets/examples/chelsea.jpg", mode=mode, style=style)
    assert [g["caption"] for g in gallery] == ["Source", "DDIM (unguided)", "AGG"]
    left, right = (Image.open(p["path"] if isinstance(p, dict) else p) for p in pair)
    assert left.size == right.size == Image.open(gallery[0]["image"]).size
    ddim, agg = table["data"]
    assert agg[2] == ddim[2]  # the MCG step reuses its forward pass: same U-Net evaluations...
    from dit_translate.methods.agg import agg_phases

    assert ddim[3] == 0 and agg[3] == agg_phases(10).count("edit") >= 1  # ...plus one backprop per edit step
    assert len(files) == 2


def test_guided_tab_needs_a_style_image_in_image_mode(client):
    with pytest.raises(Exception, match="needs a style image"):
        _guide(client, "assets/examples/chelsea.jpg", mode="image")
    with pytest.raises(Exception, match="AGG needs a target"):
        _guide(client, "assets/examples/chelsea.jpg", text="  ")


def test_paired_tab_translates_at_the_input_aspect_ratio(client):
    pair, table, file = client.predict(
        gradio_client.handle_file("assets/examples/coffee.jpg"), "tiny-dit", 4, 2.0, 0, api_name="/translate"
    )
    before, after = (Image.open(p["path"] if isinstance(p, dict) else p) for p in pair)
    assert before.size == after.size and abs(after.width / after.height - 600 / 400) < 0.05
    (row,) = table["data"]
    assert row[2] == 2 * 4  # 4 DDIM steps, both CFG branches
    assert Image.open(file).size == after.size
