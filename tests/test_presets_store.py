"""Presets are validated with clear errors; the store caches, frees and fails clearly offline."""

import pytest

from dit_translate.presets import PresetError, list_presets, load_preset
from dit_translate.store import MissingWeightsError, ModelStore, availability, resolve_folder


def _write(tmp_path, body: str):
    path = tmp_path / "p.toml"
    path.write_text(body)
    return path


def test_shipped_presets_load():
    names = {p.name for p in list_presets()}
    assert {"tiny", "sd15", "sd21-base"} <= names
    sd15 = load_preset("sd15")
    assert sd15.model == "stable-diffusion-v1-5/stable-diffusion-v1-5" and not sd15.is_local
    tiny = load_preset("tiny")
    assert tiny.is_local and tiny.model.endswith("assets/tiny/sd") and tiny.fallback == "random-sd"


@pytest.mark.parametrize(
    "body,match",
    [
        ('name="x"\nkind="stable-diffusion"\nmodel="a/b"\ncolour="red"', r"unknown field\(s\) \['colour'\]"),
        ('name="x"\nkind="gan"\nmodel="a/b"', "'kind' must be one of"),
        ('name="x"\nkind="pixel"', "'model' must be a non-empty string"),
        ('name="x"\nkind="pixel"\nmodel="a/b"\nsize=100', "'size' must be an integer multiple of 8"),
        ('name="x"\nkind="pixel"\nmodel="a/b"\n[defaults]\nsteps=0', "steps must be in"),
        ('name="x"\nkind="pixel"\nmodel="a/b"\n[defaults]\nstrength="high"', "strength must be a float"),
        ('name="x"\nkind="pixel"\nmodel="a/b"\n[defaults]\nwarp=1', "unknown \\[defaults\\] field 'warp'"),
        ('name="x"\nkind="pixel"\nmodel="a/b"\n[layers.pnp]\nvalues=["a"]', "unknown kind"),
        ('name="x"\nkind="pixel"\nmodel="a/b"\n[layers.pnp]\nresnet="up_blocks.1"', "must be a list"),
        ("name = [", "not valid TOML"),
    ],
)
def test_bad_presets_are_named_errors(tmp_path, body, match):
    with pytest.raises(PresetError, match="p.toml") as err:
        load_preset(str(_write(tmp_path, body)))
    assert err.match(match)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PresetError, match="unknown preset 'nope'; available presets: .*sd15.*tiny"):
        load_preset("nope")


def test_offline_hub_preset_fails_fast_with_instructions():
    preset = load_preset("sd15")
    assert not availability(preset).ok
    with pytest.raises(MissingWeightsError) as err:
        resolve_folder(preset)
    msg = str(err.value)
    assert "'sd15'" in msg and "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg and "hf download" in msg


def test_missing_local_folder_is_a_clear_error(tmp_path):
    path = _write(tmp_path, 'name="mine"\nkind="stable-diffusion"\nmodel="./missing-folder"')
    preset = load_preset(str(path))
    assert not availability(preset).ok
    with pytest.raises(MissingWeightsError, match="preset 'mine': model folder .*missing-folder does not exist"):
        ModelStore(device="cpu").get(preset)


def test_store_loads_once_and_switching_frees(tmp_path, random_sd_folder):
    store = ModelStore(device="cpu")
    first = store.get("tiny", model=str(random_sd_folder))
    assert store.get("tiny", model=str(random_sd_folder)) is first
    assert not first.untrained and first.folder == random_sd_folder
    other = tmp_path / "copy"
    import shutil

    shutil.copytree(random_sd_folder, other)
    second = store.get("tiny", model=str(other))
    assert second is not first and store._current[1] is second
