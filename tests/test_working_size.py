"""The working size (issue 17): ``--size`` on edit / guide / translate, a ``--model``'s own size, clear refusals."""

import json

import pytest
from PIL import Image

from dit_translate import api
from dit_translate.cli import main
from dit_translate.store import ModelStore

COFFEE = "assets/examples/coffee.jpg"  # 600 x 400


def _side(result) -> int:
    return max(result.image.shape[-2:])


def test_edit_and_guide_run_at_the_requested_size():
    store = ModelStore()
    quick = api.EditRequest("sdedit", "a comic drawing", steps=4, strength=0.5, size=64)
    assert _side(api.edit(quick, COFFEE, preset="tiny", store=store)) == 64
    assert _side(api.edit(api.EditRequest("sdedit", "a comic drawing", steps=4, strength=0.5), COFFEE,
                          preset="tiny", store=store)) == 96  # the preset's size
    guided = api.guide(api.GuideRequest(text="a comic drawing", steps=10, size=48), COFFEE, preset="tiny", store=store)
    assert tuple(guided.image.shape[-2:]) == (32, 48) and tuple(guided.extras["ddim"].image.shape[-2:]) == (32, 48)


def test_a_models_own_size_is_the_default_with_model(random_sd_folder):
    """--model without --size runs at the model's configured size (U-Net sample_size x VAE factor), not the preset's."""
    store = ModelStore()
    loaded = store.get("tiny", str(random_sd_folder))
    native = loaded.models.unet.config.sample_size * loaded.models.scale_factor
    assert loaded.working_size == native != loaded.preset.size
    result = api.edit(api.EditRequest("sdedit", "a comic drawing", steps=2, strength=0.5), COFFEE, preset="tiny",
                      model=str(random_sd_folder), store=store)
    assert _side(result) == native


@pytest.mark.parametrize("size,match", [(102, "size 102 is not a multiple of 4, the model's size factor; try 100"),
                                        (8, r"size must be a whole number in \[16, 4096\]"),
                                        (64.5, "size must be a whole number")])
def test_bad_sizes_are_refused_with_the_reason(size, match):
    with pytest.raises(ValueError, match=match):
        api.edit(api.EditRequest("sdedit", "a comic drawing", steps=2, size=size), COFFEE, preset="tiny")


def test_translate_and_the_cli_take_size(tmp_path, capsys):
    default = api.translate(COFFEE, preset="tiny-dit", steps=2)
    result = api.translate(COFFEE, preset="tiny-dit", steps=2, size=64)
    assert _side(default) == 96 and _side(result) == 64
    out = tmp_path / "out.png"
    assert main(["edit", "--method", "sdedit", "--image", COFFEE, "--prompt", "a comic drawing", "--steps", "2",
                 "--size", "48", "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload["size"] == [48, 32] and payload["output_size"] == [600, 400]  # worked at 48 px, written at 600
    with Image.open(out) as im:
        assert im.size == (600, 400)
    assert main(["edit", "--method", "sdedit", "--image", COFFEE, "--prompt", "a comic drawing", "--steps", "2",
                 "--size", "48", "--output-size", "working", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (48, 32)


def test_the_app_shows_and_offers_results_at_the_input_size():
    import app

    gallery, _, files, _ = app.run_editing(COFFEE, "a comic drawing", "tiny", 0.5, 2, 5.0, 0, ["sdedit"],
                                           "released", 0, 0)
    for path in [g[0] for g in gallery] + list(files):
        with Image.open(path) as im:
            assert im.size == (600, 400)  # the 96 px working result brought back to the upload's size
