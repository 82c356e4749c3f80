"""Paired (kind "dit") presets: shipped presets, validation with named errors, availability and fallback."""

import pytest
from test_paired_support import tiny_clip, write_preset  # noqa: F401 - fixture

from dit_translate.errors import MissingWeightsError
from dit_translate.paired.loading import resolve_paired_folder
from dit_translate.presets import PAIRED_KINDS, PresetError, list_presets, load_preset
from dit_translate.store import availability


def test_shipped_paired_presets_keep_the_paper_configuration_apart():
    assert {p.name for p in list_presets()} >= {"tiny", "sd15"}
    assert not {"tiny-dit", "face2comics", "edges2shoes"} & {p.name for p in list_presets()}  # editing dropdown
    assert {p.name for p in list_presets(PAIRED_KINDS)} == {"tiny-dit", "face2comics", "edges2shoes", "tiny-colorize"}
    assert load_preset("tiny-colorize").paired.data.layout == "colorization"  # the pix2pix colouriser (issue 18)
    for name in ("face2comics", "edges2shoes"):
        p = load_preset(name)
        spec = p.paired
        assert p.kind == "dit" and p.size == 256 and p.is_local and p.fallback is None
        assert (spec.dit.size, spec.dit.patch, spec.dit.dims()) == ("B", 2, (12, 768, 12))  # DiT-B/2
        assert not spec.dit.source_concat and spec.dit.cond_dropout == 0.1  # the paper's global CLIP only
        assert spec.encoders.vae == "stabilityai/sd-vae-ft-ema" and spec.encoders.clip.startswith("ViT-L-14")
        assert (spec.diffusion.beta_start, spec.diffusion.beta_end, spec.train.ema_decay) == (1e-4, 0.02, 0.9999)
    assert load_preset("face2comics").paired.data.layout == "folders"
    assert load_preset("edges2shoes").paired.data.layout == "ab"
    tiny = load_preset("tiny-dit")
    assert tiny.fallback == "random-dit" and tiny.model.endswith("assets/tiny/dit") and tiny.paired.encoders.vae.endswith("assets/tiny/sd") and tiny.paired.encoders.vae_subfolder == "vae"
    assert tiny.paired.encoders.clip.endswith("assets/tiny/clip") and tiny.paired.train.lambda_lpips == 0


def test_local_encoder_paths_resolve_against_the_preset_folder(tmp_path):
    path = write_preset(tmp_path / "p.toml", tmp_path / "x", encoders={"clip": "local-dir:./clip", "vae": "../vae"})
    enc = load_preset(str(path)).paired.encoders
    assert enc.clip == f"local-dir:{tmp_path / 'clip'}" and enc.vae == str(tmp_path.parent / "vae")


@pytest.mark.parametrize(
    "tables,match",
    [
        ({"dit": {"size": "M"}}, r"\[dit\] size must be one of"),
        ({"dit": {"patch": 3}}, r"\[dit\] patch must be one of \(1, 2, 4, 8\)"),
        ({"dit": {"colour": 1}}, r"unknown \[dit\] field\(s\) \['colour'\]"),
        ({"dit": {"cond_dropout": 1.5}}, r"\[dit\] cond_dropout must be in \[0, 0.99\]"),
        ({"dit": {"source_concat": 1}}, r"\[dit\] source_concat must be a bool"),
        ({"dit": {"hidden_size": 30}}, "must split into 2 heads of an even width"),
        ({"train": {"lr": "fast"}}, r"\[train\] lr must be a float"),
        ({"train": {"model": "gan"}}, r"\[train\] model must be one of \('dit', 'pix2pix'\)"),
        ({"train": {"clip_reference": "both"}}, r"\[train\] clip_reference must be one of"),
        ({"train": {"aux_t_max": 2000}}, "aux_t_max must be at most"),
        ({"data": {"layout": "zip"}}, r"\[data\] layout must be one of"),
        ({"data": {"direction": "AB"}}, r"\[data\] direction must be one of"),
        ({"data": {"load_size": 16}}, "load_size 16 must be 0 or at least 'size' 32"),
        ({"diffusion": {"beta_end": 1e-5}}, "beta_end must be larger than beta_start"),
        ({"encoders": {"clip": "ViT-L-14"}}, "must be 'arch/pretrained-tag'"),
        ({"encoders": {"clip": "local-dir:"}}, "names no folder"),
        ({"defaults": {"size": 36}}, r"\[defaults\] size must be 0 or a multiple of 8 in \[32, 2048\]"),
    ],
)
def test_bad_paired_fields_are_named_errors(tmp_path, tables, match):
    path = write_preset(tmp_path / "p.toml", tmp_path / "clip", **tables)
    with pytest.raises(PresetError, match="p.toml") as err:
        load_preset(str(path))
    assert err.match(match)


@pytest.mark.parametrize(
    "body,match",
    [
        ('name="x"\nkind="dit"\nmodel="org/dit"', "must be a local checkpoint folder"),
        ('name="x"\nkind="dit"\nmodel="./c"\nfallback="random-sd"', r"'fallback' must be one of \('random-dit',\)"),
        ('name="x"\nkind="stable-diffusion"\nmodel="a/b"\n[dit]\nsize="S"', r"table\(s\) \['dit'\] only apply"),
        ('name="x"\nkind="stable-diffusion"\nmodel="a/b"\n[defaults]\nsize=96', "an editing preset's working size is"),
    ],
)
def test_bad_paired_presets(tmp_path, body, match):
    path = tmp_path / "p.toml"
    path.write_text(body)
    with pytest.raises(PresetError, match=match):
        load_preset(str(path))


def test_availability_and_missing_checkpoint_message(tiny_dit_without_weights):
    real = load_preset("face2comics")
    assert not availability(real).ok and "no trained checkpoint" in availability(real).detail
    with pytest.raises(MissingWeightsError, match=r"preset 'face2comics': no trained checkpoint at .*train one with "
                                                  r"`python -m dit_translate train --config .*face2comics.toml"):
        resolve_paired_folder(real)
    shipped = load_preset("tiny-dit")
    assert availability(shipped).ok and not availability(shipped).untrained
    assert "UNTRAINED" not in availability(shipped).detail
    missing = load_preset(str(tiny_dit_without_weights))
    assert availability(missing).ok and availability(missing).untrained
    assert "UNTRAINED" in availability(missing).detail
