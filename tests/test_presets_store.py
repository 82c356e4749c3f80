"""Presets are validated with clear errors; the store caches, frees and fails clearly offline."""

from pathlib import Path

import pytest

from dit_translate.errors import MissingWeightsError
from dit_translate.presets import PresetError, list_presets, load_preset
from dit_translate.store import ModelStore, availability
from dit_translate.weights import resolve_folder


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
        ('name="x"\nkind="pixel"\nmodel="a/b"\n[defaults]\nsteps=0', r"\[defaults\] steps must be a whole number at least 1"),
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


def test_shipped_presets_name_guidance_models():
    sd15 = load_preset("sd15").guidance
    assert sd15.clip == ("ViT-B-32/openai",) and sd15.dino == "vit_base_patch8_224.dino" and sd15.fallback is None
    tiny = load_preset("tiny")
    assert tiny.guidance.fallback == "random-tiny"
    assert tiny.guidance.clip[0].startswith("local-dir:/") and tiny.guidance.clip[0].endswith("assets/tiny/clip")
    assert tiny.with_model("/elsewhere").guidance == tiny.guidance
    shipped = Path(tiny.guidance.clip[0].removeprefix("local-dir:"), "open_clip_config.json").is_file()
    assert shipped or "guidance: UNTRAINED random tiny clip" in availability(tiny).detail
    assert availability(tiny).untrained != Path(tiny.model, "model_index.json").is_file()  # the model only


def test_guidance_local_dirs_resolve_against_the_preset_file(tmp_path):
    path = _write(tmp_path, 'name="x"\nkind="pixel"\nmodel="a/b"\n[guidance]\nclip=["local-dir:./c", "RN50/openai"]\n'
                            'dino="local-dir:d"')
    g = load_preset(str(path)).guidance
    assert g.clip == (f"local-dir:{tmp_path / 'c'}", "RN50/openai") and g.dino == f"local-dir:{tmp_path / 'd'}"


@pytest.mark.parametrize(
    "table,match",
    [
        ('clip="ViT-B-32/openai"', "clip must be a list"),
        ('clip=["ViT-B-32"]', "must be 'arch/pretrained-tag'"),
        ('clip=["a/b/c"]', "must be 'arch/pretrained-tag'"),
        ('clip=["local-dir:"]', "names no folder after 'local-dir:'"),
        ('dino="timm/vit_base_patch8_224.dino"', "dino 'timm/vit_base_patch8_224.dino' must be a timm id"),
        ("dino=3", "dino must be a timm id"),
        ('clip=["RN50/openai"]\nfallback="random-tiny"', "fallback only applies to 'local-dir:' models"),
        ('dino="local-dir:d"\nfallback="zeros"', "fallback must be one of"),
        ('lpips="alex"', r"unknown \[guidance\] field\(s\) \['lpips'\]"),
        ("", "names no model"),
    ],
)
def test_bad_guidance_tables_are_named_errors(tmp_path, table, match):
    path = _write(tmp_path, f'name="x"\nkind="pixel"\nmodel="a/b"\n[guidance]\n{table}')
    with pytest.raises(PresetError, match="p.toml") as err:
        load_preset(str(path))
    assert err.match(match)
