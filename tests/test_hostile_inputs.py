"""Hostile and odd inputs through the Python API, the CLI and the app's handlers (issue 7).

Every case either works (and the result is checked against an oracle) or fails with one clear error
naming what was wrong; nothing crashes and the core leaves no temporary files behind. Hypothesis runs
are derandomized (the same examples on every machine); ``--hypothesis-show-statistics`` prints how many
examples ran and how they split between "works" and each error (the figures in RELIABILITY.md).
"""

from __future__ import annotations

import io
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image, features
from test_images import BAD_FILES, _exif_jpeg, _frames, encode, png_header
from test_paired_support import tiny_clip, write_preset  # noqa: F401 - fixture

from dit_translate import api
from dit_translate.cli import main
from dit_translate.images import ImageError
from dit_translate.knobs import SEED_MAX
from dit_translate.presets import PRESET_DIR, PresetError, load_preset, parse_preset

FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAN, INF = float("nan"), float("inf")
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
TINY_MAX_STEPS = 999
"""The tiny scheduler's "leading" grid is shifted by steps_offset = 1: 1000 steps would reach t = 1000."""
LONG_PROMPT = "a comic drawing of a cat " * 400  # 10,000 characters
PROMPTS = {
    "non-Latin": "猫の漫画 кошка قطة",
    "emoji": "🐱🎨✨" * 50,
    "control characters": "a\x00b\x1b[31m\u202ec",
}


def edit(**kw) -> api.TranslationResult:
    """One cheap SDEdit run on the tiny preset (overrides in ``kw``; ``image`` defaults to a photo)."""
    image, preset = kw.pop("image", None) or photo(), kw.pop("preset", "tiny")
    request = {"method": "sdedit", "prompt": "a comic drawing", "steps": 2, "strength": 1.0, "guidance": 1.0, **kw}
    return api.edit(api.EditRequest(**request), image, preset=preset)


def photo(size: tuple[int, int] = (48, 32)) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea()).resize(size)


def error_message(exc: BaseException) -> str:
    return str(getattr(exc, "message", exc))


def fresh_tmpdir(tmp_path_factory, monkeypatch, name: str):
    """Point TMPDIR (and ``tempfile``'s cached choice) at a fresh folder ``name``; returns it."""
    folder = tmp_path_factory.mktemp(name)
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def clean_tmp(tmp_path_factory, monkeypatch):
    """A fresh TMPDIR, which must stay empty."""
    folder = fresh_tmpdir(tmp_path_factory, monkeypatch, "TMPDIR")
    yield folder
    assert sorted(p.name for p in folder.iterdir()) == [], "the core left temporary files behind"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """The image files of test_images.BAD_FILES (empty, truncated, not an image, bombs) on disk."""
    folder = tmp_path_factory.mktemp("bad")
    for name, (data, _) in BAD_FILES.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in BAD_FILES}


# --------------------------------------------------------------------------- knobs (Python API)


def _whole(value: object, low: int, high: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and float(value).is_integer() and low <= value <= high


def _finite_in(value: object, low: float, high: float, *, low_open: bool = False) -> bool:
    number = isinstance(value, float | int) and not isinstance(value, bool)
    return number and (low < value if low_open else low <= value) and value <= high


KNOBS = {  # name -> (valid values, invalid values)
    "strength": (st.one_of(st.floats(0.05, 1), st.just(1.0)),
                 st.sampled_from([0.0, -0.5, 1e-9, 1.0000001, NAN, INF, -INF, "0.5", True])),
    "steps": (st.one_of(st.integers(1, 6), st.just(2.0)),
              st.sampled_from([0, -1, TINY_MAX_STEPS + 1, 10**9, 2.5, NAN, INF, True, "3"])),
    "guidance": (st.one_of(st.floats(0, 100), st.sampled_from([0.0, 1.0, 100.0])),
                 st.sampled_from([-0.1, 100.1, NAN, INF, -INF, "5"])),
    "seed": (st.one_of(st.integers(0, SEED_MAX), st.sampled_from([SEED_MAX, 2.0])),
             st.sampled_from([-1, SEED_MAX + 1, 2**70, 1.5, NAN, INF, True, "7"])),
}


@pytest.mark.usefixtures("clean_tmp")
class TestKnobs:
    @settings(FAST, max_examples=30)
    @given(data=st.data())
    def test_knobs_work_or_name_the_bad_one(self, data):
        """Up to two knobs drawn from hostile values, the rest from valid ones. Oracle: the documented
        ranges (computed from the values, not from the draw); a valid run does int(steps * strength) DDIM
        steps at 1 or 2 U-Net evaluations each (CFG off at guidance 1)."""
        hostile = data.draw(st.sets(st.sampled_from(sorted(KNOBS)), max_size=2), label="hostile knobs")
        knobs = {name: data.draw(KNOBS[name][name in hostile], label=name) for name in sorted(KNOBS)}
        strength, steps, guidance, seed = (knobs[k] for k in ("strength", "steps", "guidance", "seed"))
        bad = {name for name, ok in (
            ("strength", _finite_in(strength, 0, 1, low_open=True)),
            ("steps", _whole(steps, 1, TINY_MAX_STEPS)),
            ("guidance", _finite_in(guidance, 0, 100)),
            ("seed", _whole(seed, 0, SEED_MAX)),
        ) if not ok}
        if not bad and int(int(steps) * strength) == 0:
            bad = {"strength"}  # valid alone, but together they run no step
        try:
            result = edit(**knobs)
        except ValueError as exc:
            event(f"error naming {sorted(bad)}")
            assert bad and any(name in str(exc) for name in bad), str(exc)
            return
        event("works")
        assert not bad, f"accepted bad {bad}"
        run = int(int(steps) * strength)
        assert result.extras["steps_run"] == run and result.nfe == run * (1 if guidance == 1 else 2)
        assert torch.isfinite(result.image).all() and result.image.shape == result.extras["source"].shape

    @pytest.mark.parametrize("steps", [TINY_MAX_STEPS + 1, 10**12])
    @pytest.mark.parametrize("method", ["sdedit", "pnp"])
    def test_steps_past_the_scheduler_grid_are_refused(self, method, steps):
        with pytest.raises(ValueError, match=f"steps must be at most {TINY_MAX_STEPS}, got {steps}"):
            edit(method=method, steps=steps, strength=0.002, inversion_steps=2)

    def test_steps_at_the_upper_bound_work(self):
        result = edit(steps=TINY_MAX_STEPS, strength=0.002)  # the last step of the grid t = 999, 998, ..., 1
        assert result.extras["steps_run"] == 1 and result.extras["start_timestep"] == 1

    def test_seed_bounds_and_determinism(self):
        top = edit(seed=SEED_MAX, strength=0.5)
        assert not torch.equal(top.image, edit(seed=0, strength=0.5).image)
        assert torch.equal(edit(seed=2**53, strength=0.5).image, edit(seed=float(2**53), strength=0.5).image)

    @pytest.mark.parametrize("value", [0, -1, 2.5, NAN, INF, "3"])
    @pytest.mark.parametrize("knob", ["steps", "inversion_steps"])
    def test_zero_steps_are_an_error_not_the_default(self, knob, value):
        with pytest.raises(ValueError, match=f"^{knob} must be a whole number at least 1, got "):
            edit(method="pnp", **{"inversion_steps": 2, knob: value})

    @pytest.mark.parametrize(("field", "value", "message"), [
        ("method", "nope", "unknown method 'nope'"),
        ("variant", "nope", "unknown correction variant 'nope'"),
        ("negative_prompt", 3, "the negative prompt must be text, got int"),
        ("prompt", None, "a prompt is required"),
    ])
    def test_bad_request_fields(self, field, value, message):
        kw = {"method": "correct", field: value}
        with pytest.raises(ValueError, match=message):
            edit(**kw)

    @pytest.mark.parametrize(("options", "message"), [
        ({"skip": NAN}, "skip must be in"),
        ({"eta_edit": INF}, "eta_edit must be in"),
        ({"lr": 0.0}, r"lr must be in \(0.0"),
        ({"inner_steps": 0}, "inner_steps must be a whole number at least 1, got 0"),
        ({"inner_steps": NAN}, "inner_steps must be a whole number at least 1, got nan"),
        ({"reg_weight": NAN}, "reg_weight must be in"),
        ({"reg_weight": -1.0}, "reg_weight must be in"),
        ({"range_weight": INF}, "range_weight must be in"),
        ({"skip": 1.0}, "leaves no step to run"),
    ])
    def test_guide_options_past_their_bounds(self, options, message):
        with pytest.raises(ValueError, match=message):
            api.guide(api.GuideRequest(text="a comic drawing", steps=5), photo(), options=options)

    @pytest.mark.parametrize(("request_kw", "message"), [
        ({"text": "a comic", "steps": 0}, "steps must be a whole number at least 1, got 0"),
        ({"text": "a comic", "seed": NAN}, "seed must be a whole number in"),
        ({"text": "a comic", "seed": None}, "seed must be a whole number in"),
        ({"text": "a comic", "guidance": NAN}, r"guidance must be in \[0.0, 100.0\], got nan"),
        ({"text": "  "}, "AGG needs a target"),
        ({"text": "a comic", "source_text": 3}, "the source text must be text, got int"),
        ({"text": 3}, "the target text must be text, got int"),
    ])
    def test_guide_request_errors(self, request_kw, message):
        with pytest.raises(ValueError, match=message):
            api.guide(api.GuideRequest(**request_kw), photo())


@pytest.fixture(scope="module")
def paired_checkpoint(tmp_path_factory, tiny_clip) -> Path:  # noqa: F811 - the imported fixture
    """An untrained pixel-space DiT checkpoint folder (the tiny-dit preset needs the tiny world's VAE)."""
    from dit_translate.paired.loading import build_untrained

    root = tmp_path_factory.mktemp("paired")
    return build_untrained(load_preset(str(write_preset(root / "toy.toml", tiny_clip))), root)


@pytest.mark.usefixtures("clean_tmp")
class TestTranslateKnobs:
    @pytest.mark.parametrize(("kw", "message"), [
        ({"steps": 0}, "steps must be a whole number at least 1, got 0"),
        ({"steps": NAN}, "steps must be a whole number"),
        ({"steps": 1001}, "steps must be at most 1000, got 1001"),
        ({"guidance": NAN}, r"guidance must be in \[0.0, 100.0\]"),
        ({"guidance": -INF}, r"guidance must be in \[0.0, 100.0\]"),
        ({"seed": -1}, "seed must be a whole number in"),
        ({"seed": INF}, "seed must be a whole number in"),
    ])
    def test_errors(self, paired_checkpoint, kw, message):
        with pytest.raises(ValueError, match=message):
            api.translate(photo(), checkpoint=str(paired_checkpoint), **{"steps": 2, **kw})

    def test_bounds_work(self, paired_checkpoint):
        result = api.translate(photo(), checkpoint=str(paired_checkpoint), steps=1, guidance=100.0, seed=SEED_MAX)
        assert result.nfe == 2 and torch.isfinite(result.image).all()
        assert result.image.shape[-2:] == (20, 32)  # the 48x32 photo at 32 px is 32 x 21.3: rounded to 4 x 5 patches

    def test_editing_and_paired_presets_are_not_interchangeable(self):
        with pytest.raises(ValueError, match="preset 'tiny' is a 'stable-diffusion' preset, not a paired"):
            api.translate(photo(), preset="tiny", steps=2)
        with pytest.raises(ValueError, match="preset 'tiny-dit' is a paired-translation"):
            edit(preset="tiny-dit")


# --------------------------------------------------------------------------- prompts


@pytest.mark.usefixtures("clean_tmp")
class TestPrompts:
    @pytest.mark.parametrize("prompt", ["", " ", "  \n\t\u3000 "])
    def test_blank_prompts_are_refused(self, prompt):
        with pytest.raises(ValueError, match="^a prompt is required"):
            edit(prompt=prompt)

    def test_long_prompts_are_truncated_with_a_warning(self, caplog):
        """Oracle: only the first 77 tokens count, so prompts differing after them give the same image."""
        with caplog.at_level(logging.WARNING):
            red, blue = edit(prompt=LONG_PROMPT + "red", guidance=5.0), edit(prompt=LONG_PROMPT + "blue", guidance=5.0)
        warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
        assert warnings and all("tokens long; truncated to the text encoder's 77" in w for w in warnings)
        assert not any("indexing errors" in r.getMessage() for r in caplog.records)  # no misleading library note
        assert torch.equal(red.image, blue.image)
        assert not torch.equal(red.image, edit(prompt="red " + LONG_PROMPT, guidance=5.0).image)

    @pytest.mark.parametrize("name", sorted(PROMPTS))
    def test_unusual_characters_are_used(self, name):
        """Oracle: the prompt reaches the model (the result differs from another prompt's, same seed)."""
        result = edit(prompt=PROMPTS[name], guidance=5.0)
        assert torch.isfinite(result.image).all()
        assert not torch.equal(result.image, edit(prompt="a comic drawing", guidance=5.0).image)

    def test_long_guidance_texts_warn_for_clip_too(self, caplog):
        with caplog.at_level(logging.WARNING):
            result = api.guide(api.GuideRequest(text=LONG_PROMPT, source_text=LONG_PROMPT, steps=8), photo())
        assert torch.isfinite(result.image).all()
        messages = [r.getMessage() for r in caplog.records]
        assert any(m.startswith("text is ") and "truncated to CLIP" in m for m in messages)


# --------------------------------------------------------------------------- images (Python API)


def _uniform(mode: str, size: tuple[int, int], value) -> bytes:
    img = Image.new(mode, size, value)
    return encode(img, "TIFF" if mode == "CMYK" else "PNG")


def _palette_transparent() -> bytes:
    img = Image.new("P", (20, 12), 1)
    img.putpalette([*RED, *BLUE])
    return encode(img, "PNG", transparency=1)


def _animated(fmt: str) -> bytes:
    first, *rest = _frames()
    return encode(first, fmt, save_all=True, append_images=rest, duration=50, **({"lossless": True} if fmt == "WEBP" else {}))


ODD_IMAGES = {  # name -> (file bytes, expected uniform colour of the prepared source, or None)
    "1x1": (_uniform("RGB", (1, 1), RED), RED),
    "16-bit grey": (encode(Image.fromarray(np.full((12, 20), 32896, np.uint16)), "PNG"), (128, 128, 128)),
    "palette + transparency": (_palette_transparent(), WHITE),
    "CMYK": (_uniform("CMYK", (20, 12), (0, 255, 255, 0)), RED),
    "LA transparent": (encode(Image.new("LA", (20, 12), (0, 0)), "PNG"), WHITE),
    "RGBA half alpha": (_uniform("RGBA", (20, 12), (0, 0, 255, 128)), (127, 127, 255)),
    "animated GIF": (_animated("GIF"), RED),
    "16:1": (_uniform("RGB", (320, 20), BLUE), BLUE),
}
if features.check("webp"):
    ODD_IMAGES["animated WebP"] = (_animated("WEBP"), RED)


def _source_rgb(result) -> np.ndarray:
    """The prepared source of a result as HxWx3 0..255 floats."""
    return ((result.extras["source"][0].permute(1, 2, 0).numpy() + 1) * 127.5)


@pytest.mark.usefixtures("clean_tmp")
class TestImages:
    @pytest.mark.parametrize("name", sorted(ODD_IMAGES))
    def test_odd_images_work(self, tmp_path, name):
        """Oracle: the colour each mode must become (alpha on white, 16 bit scaled, first frame, CMYK)."""
        data, colour = ODD_IMAGES[name]
        path = tmp_path / "odd.png"
        path.write_bytes(data)
        result = edit(image=path)
        assert np.abs(_source_rgb(result) - colour).max() <= 1.5
        assert torch.isfinite(result.image).all() and result.image.shape == result.extras["source"].shape

    def test_exif_rotated_jpeg_is_upright(self):
        result = edit(image=_exif_jpeg(6))  # stored 64x32 left red | right blue; displayed rotated 90 degrees
        rgb = _source_rgb(result)
        h, w, _ = rgb.shape
        assert h > w
        assert np.abs(rgb[: h // 4].mean((0, 1)) - RED).max() < 20 and np.abs(rgb[-h // 4:].mean((0, 1)) - BLUE).max() < 20

    @pytest.mark.parametrize("size", [(20000, 20), (20, 20000), (17, 1)])
    def test_too_elongated_images_name_their_own_size(self, size):
        with pytest.raises(ImageError, match=f"cannot fit a {size[0]}x{size[1]} image: its aspect ratio"):
            edit(image=_uniform("RGB", size, RED))

    @pytest.mark.parametrize("name", sorted(BAD_FILES))
    @pytest.mark.parametrize("entry", ["edit", "guide", "translate"])
    def test_bad_files_fail_clearly_in_every_entry_point(self, bad_files, entry, name):
        call = {
            "edit": lambda p: edit(image=p),
            "guide": lambda p: api.guide(api.GuideRequest(text="a comic", steps=2), p),
            "translate": lambda p: api.translate(p, preset="no-such-preset"),  # the image is checked first
        }[entry]
        with pytest.raises(ImageError, match=f"^cannot read image '{name}': .*{_fragment(name)}"):
            call(bad_files[name])

    def test_bad_style_image(self, bad_files):
        with pytest.raises(ImageError, match="^cannot read image 'bomb.png': the image is too large"):
            api.guide(api.GuideRequest(style_image=bad_files["bomb.png"], steps=2), photo())

    @FAST
    @given(data=st.data())
    def test_generated_images(self, tmp_path_factory, data):
        """Random mode, size and format. Oracle: refused iff more elongated than 16:1; otherwise the
        prepared source keeps the aspect ratio and the colour the mode must convert to."""
        mode, fmt = data.draw(st.sampled_from([("RGB", "PNG"), ("RGB", "JPEG"), ("RGB", "BMP"), ("L", "PNG"),
                                                ("RGBA", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("CMYK", "TIFF"),
                                                ("RGB", "GIF"), ("RGBA", "TIFF")]), label="mode, format")
        w, h = data.draw(st.integers(1, 80), label="width"), data.draw(st.integers(1, 80), label="height")
        grey, alpha = data.draw(st.integers(0, 255), label="grey"), data.draw(st.integers(0, 255), label="alpha")
        value = {"RGB": (grey,) * 3, "L": grey, "RGBA": (grey,) * 3 + (alpha,), "LA": (grey, alpha),
                 "I;16": grey * 257, "CMYK": (0, 0, 0, 255 - grey)}[mode]
        expected = grey if mode not in ("RGBA", "LA") else (grey * alpha + 255 * (255 - alpha)) / 255
        path = tmp_path_factory.mktemp("gen") / f"x.{fmt.lower()}"
        path.write_bytes(encode(Image.new(mode, (w, h), value), fmt))
        try:
            result = edit(image=path, steps=1)
        except ImageError as exc:
            event("refused: aspect ratio")
            assert max(w, h) / min(w, h) > 16 and "aspect ratio" in str(exc)
            return
        event("works")
        assert max(w, h) / min(w, h) <= 16
        _, _, sh, sw = result.extras["source"].shape
        assert (sw >= sh) == (w >= h) or abs(w - h) <= max(w, h) / 4  # near-square may round either way
        tolerance = 8 if fmt in ("JPEG", "GIF") else 1.5  # lossy / palette-quantised formats
        assert np.abs(_source_rgb(result) - expected).max() <= tolerance

    @FAST
    @given(data=st.data())
    def test_mutated_files(self, tmp_path_factory, data):
        """Valid files cut short or with bytes overwritten, under an image extension: each either loads
        and runs or fails with one ImageError naming the file."""
        fmt = data.draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF"]), label="format")
        raw = bytearray(encode(photo((24, 16)).convert("P" if fmt == "GIF" else "RGB"), fmt))
        cut = data.draw(st.integers(0, len(raw)), label="cut at")
        for _ in range(data.draw(st.integers(0, 4), label="flips")):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        path = tmp_path_factory.mktemp("mut") / f"m.{fmt.lower()}"
        path.write_bytes(bytes(raw[:cut]))
        try:
            result = edit(image=path, steps=1)
        except ImageError as exc:
            event(f"refused: {str(exc).split(': ')[1].split(' (')[0]}")
            assert str(exc).startswith(("cannot read image 'm.", "cannot fit a ")) and "\n" not in str(exc)
            return
        event("works")
        assert torch.isfinite(result.image).all()


def _fragment(name: str) -> str:
    return BAD_FILES[name][1].replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")


# --------------------------------------------------------------------------- presets


BAD_TOML = {  # file text -> fragment naming the field
    'name = "x"\nkind = "pixel"\nmodel = "m"\nsize = 33\n': "'size' must be an integer multiple of 8",
    'name = "x"\nkind = "nope"\nmodel = "m"\n': "'kind' must be one of",
    'name = "x"\nkind = "pixel"\nmodel = ""\n': "'model' must be a non-empty string",
    'name = "x"\nkind = "pixel"\nmodel = "m"\nbogus = 1\n': "unknown field(s) ['bogus']",
    'name = "x"\nkind = "pixel"\nmodel = "m"\n[defaults]\nstrength = nan\n': "[defaults] strength must be in (0.0, 1.0]",
    'name = "x"\nkind = "pixel"\nmodel = "m"\n[defaults]\nguidance = inf\n': "[defaults] guidance must be in [0.0, 100.0]",
    'name = "x"\nkind = "pixel"\nmodel = "m"\n[defaults]\nsteps = 0\n': "[defaults] steps must be a whole number at least 1",
    'name = "x"\nkind = "pixel"\nmodel = "m"\n[defaults]\nsteps = "20"\n': "[defaults] steps must be a int",
    'name = "x"\nkind = "pixel"\nmodel = "m"\n[guidance]\nclip = 5\n': "[guidance] clip must be a list",
    'name = "x"\nkind = "pixel"\nmodel = "m"\n[layers.pnp]\nresnet = "up"\n': "[layers.pnp] resnet must be a list",
    'name = "x"\nkind = "dit"\nmodel = "hub/id"\n': "'model' of a dit preset must be a local checkpoint folder",
    "name = [unclosed\n": "not valid TOML",
    "\xff\xfe garbage": "not valid TOML",
}


@pytest.mark.usefixtures("clean_tmp")
class TestPresets:
    @pytest.mark.parametrize("name", ["nope", "", "../presets/tiny", ".tiny", "tiny\n", "a\x00b", "x" * 5000,
                                      "🐱", None, 5])
    def test_unknown_preset_names(self, name):
        with pytest.raises(PresetError, match="^(unknown preset|cannot read preset|a preset must be a name)"):
            edit(preset=name)

    @pytest.mark.parametrize("text", sorted(BAD_TOML))
    def test_bad_preset_files_name_file_and_field(self, tmp_path, text):
        path = tmp_path / "bad.toml"
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(PresetError) as info:
            edit(preset=str(path))
        assert str(info.value).startswith("preset bad.toml: ") and BAD_TOML[text] in str(info.value)

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(data=st.data())
    def test_mutated_shipped_presets(self, data):
        """Each shipped preset with one field removed or set to a random value: it parses, or the
        PresetError names the file and the field (or its table)."""
        raw = {p.stem: tomllib.loads(p.read_text()) for p in PRESET_DIR.glob("*.toml")}
        name = data.draw(st.sampled_from(sorted(raw)), label="preset")
        preset = {k: dict(v) if isinstance(v, dict) else v for k, v in raw[name].items()}
        table = data.draw(st.sampled_from([None, *sorted(k for k, v in preset.items() if isinstance(v, dict))]))
        target = preset if table is None else preset[table]
        key = data.draw(st.sampled_from([*sorted(target), "bogus"]), label="field")
        if key in target and data.draw(st.booleans(), label="remove"):
            del target[key]
        else:
            target[key] = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=9),
                                              st.lists(st.integers(), max_size=2)), label="value")
        try:
            parse_preset(preset, PRESET_DIR / f"{name}.toml")
        except PresetError as exc:
            event("PresetError")
            assert str(exc).startswith(f"preset {name}.toml: ") and (key in str(exc) or (table or key) in str(exc))
            return
        event("parses")


# --------------------------------------------------------------------------- CLI


def _cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; assert exit status 2 and exactly one stderr line; return it."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.usefixtures("clean_tmp")
class TestCli:
    @pytest.mark.parametrize(("extra", "message"), [
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--steps", "abc"], "argument --steps: must be a whole number, got 'abc'"),
        (["--seed", "1.5"], "argument --seed: invalid int value: '1.5'"),
        (["--seed", str(2**70)], "seed must be a whole number in"),
        (["--seed", "-1"], "seed must be a whole number in"),
        (["--strength", "nan"], "strength must be in"),
        (["--strength", "inf"], "strength must be in"),
        (["--guidance", "1e9"], "guidance must be in"),
        (["--steps", "1000"], "steps must be at most 999"),
        (["--prompt", " \t"], "a prompt is required"),
        (["--preset", "../presets/tiny"], "unknown preset '../presets/tiny'"),
        (["--method", "nope"], "argument --method: invalid choice: 'nope'"),
        (["--out", "out.gif"], "cannot save image 'out.gif': unsupported file extension '.gif'"),
    ])
    def test_edit_errors(self, capsys, tmp_path, extra, message):
        args = {"--method": "sdedit", "--image": str(_photo_file(tmp_path)), "--prompt": "a comic",
                "--steps": "2", "--out": str(tmp_path / "o.png")}
        args.update(zip(extra[::2], extra[1::2]))
        if not str(args["--out"]).startswith("/"):
            args["--out"] = str(tmp_path / args["--out"])
        line = _cli_error(capsys, ["edit", *[x for kv in args.items() for x in kv]])
        assert message in line and "usage:" not in line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]  # no output, no partial file

    @pytest.mark.parametrize("name", sorted(BAD_FILES))
    @pytest.mark.parametrize("command", ["edit", "guide", "translate"])
    def test_bad_images(self, capsys, tmp_path, bad_files, command, name):
        extra = {"edit": ["--method", "pnp", "--prompt", "x"], "guide": ["--text", "x"], "translate": []}[command]
        line = _cli_error(capsys, [command, "--image", str(bad_files[name]), *extra, "--out", str(tmp_path / "o.png")])
        assert line.startswith(f"error: cannot read image '{name}'") and not (tmp_path / "o.png").exists()

    @pytest.mark.parametrize(("argv", "message"), [
        (["guide", "--text", " "], "AGG needs a target"),
        (["guide", "--text", "x", "--style-image", "s.png"], "give either a target text or a style image"),
        (["guide", "--style-image", "nowhere.png"], "cannot read image 'nowhere.png': the file does not exist"),
        (["translate", "--preset", "tiny"], "is a 'stable-diffusion' preset, not a paired"),
        (["translate", "--checkpoint", "/nonexistent-folder"], "/nonexistent-folder does not exist"),
        (["translate", "--steps", "-3"], "must be at least 1, got -3"),
        (["translate", "--checkpoint", "CHECKPOINT", "--guidance", "nan"], "guidance must be in"),
        (["translate", "--checkpoint", "CHECKPOINT", "--seed", str(2**64)], "seed must be a whole number in"),
    ])
    def test_guide_and_translate_errors(self, capsys, tmp_path, paired_checkpoint, argv, message):
        argv = [str(paired_checkpoint) if a == "CHECKPOINT" else a for a in argv]
        line = _cli_error(capsys, [*argv, "--image", str(_photo_file(tmp_path)), "--out", str(tmp_path / "o.png")])
        assert message in line


def _photo_file(folder: Path) -> Path:
    path = folder / "photo.png"
    photo().save(path)
    return path


def _run_cli(args: list[str], tmpdir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmpdir), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dit_translate", *args], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent, timeout=600)


def test_cli_process_bomb_is_one_line(tmp_path, clean_tmp):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(8_000, 8_000))
    proc = _run_cli(["edit", "--method", "sdedit", "--image", str(bomb), "--prompt", "x",
                     "--out", str(tmp_path / "o.png")], clean_tmp)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["error: cannot read image 'bomb.png': the image is too large "
                                        "(8000x8000 = 64.0 megapixels, the limit is 40.0)"]


def test_cli_process_usage_error_is_one_line(tmp_path, clean_tmp):
    proc = _run_cli(["edit", "--method", "sdedit", "--image", "x.png", "--prompt", "x", "--seed", "nan",
                     "--out", str(tmp_path / "o.png")], clean_tmp)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: argument --seed: invalid int value: 'nan' "
                                        "(see `python -m dit_translate edit --help`)"]


def test_cli_process_long_prompt_works_and_leaves_no_temp_files(tmp_path, clean_tmp):
    out = tmp_path / "out.png"
    proc = _run_cli(["edit", "--method", "correct", "--image", str(_photo_file(tmp_path)), "--prompt",
                     LONG_PROMPT + "🐱 猫", "--steps", "2", "--output-size", "working", "--out", str(out), "--json"], clean_tmp)
    assert proc.returncode == 0, proc.stderr
    assert "tokens long; truncated to the text encoder's 77" in proc.stderr and "Traceback" not in proc.stderr
    from dit_translate.images import load_image
    from dit_translate.sizes import to_working_size
    from dit_translate.store import ModelStore

    multiple = ModelStore().get("tiny").models.size_multiple  # the VAE factor: 4 for the tiny world
    expected = to_working_size(load_image(_photo_file(tmp_path)), load_preset("tiny").size, multiple).size
    assert Image.open(out).size == expected


# --------------------------------------------------------------------------- app handlers (in-process)


@pytest.fixture(scope="module")
def app():
    import app as module

    return module


def _no_progress(*_args, **_kwargs) -> None:
    """Stands in for gr.Progress outside a gradio event."""


def _run_editing(app, image, **kw):
    args = {"prompt": "a comic drawing", "preset": "tiny", "strength": 1.0, "steps": 2, "guidance": 1.0, "seed": 0,
            "methods": ["sdedit"], "variant": "released", "inversion_steps": 2, **kw}
    return app.run_editing(image, **args, progress=_no_progress)


def _run_guided(app, image, **kw):
    args = {"mode": "text", "text": "a comic drawing", "source_text": "", "style_image": None, "preset": "tiny",
            "steps": 8, "guidance": 3.0, "seed": 0, "skip": 0.4, "edit": 0.2, "eta_edit": 0.7, "lr": 0.02,
            "inner_steps": 1, "reg_weight": 200.0, "symmetric": False, **kw}
    return app.run_guided(image, **args, progress=_no_progress)


@pytest.fixture
def app_tmp(tmp_path_factory, monkeypatch):
    """A fresh TMPDIR for the app's handlers (what they leave is checked by the test itself)."""
    return fresh_tmpdir(tmp_path_factory, monkeypatch, "TMPDIR-app")


@pytest.mark.usefixtures("app_tmp")
class TestAppHandlers:
    @pytest.mark.parametrize("name", ["empty.png", "half.jpg", "text.png", "bomb.png"])
    @pytest.mark.parametrize("handler", ["edit", "guide", "translate"])
    def test_bad_uploads(self, app, bad_files, handler, name):
        call = {"edit": lambda p: _run_editing(app, p), "guide": lambda p: _run_guided(app, p),
                "translate": lambda p: app.run_paired(p, "tiny-dit", 2, 2.0, 0, progress=_no_progress)}[handler]
        with pytest.raises(app.gr.Error) as info:
            call(str(bad_files[name]))
        assert error_message(info.value).startswith(f"cannot read image '{name}'")

    @pytest.mark.parametrize(("kw", "message"), [
        ({"image": None}, "Upload an image first."),
        ({"methods": []}, "Choose at least one method."),
        ({"prompt": "   "}, "a prompt is required"),
        ({"preset": None}, "a preset must be a name or a path to a .toml file, got NoneType"),
        ({"preset": "../presets/tiny"}, "unknown preset '../presets/tiny'"),
        ({"strength": NAN}, "strength must be in (0.0, 1.0], got nan"),
        ({"guidance": INF}, "guidance must be in [0.0, 100.0], got inf"),
        ({"steps": 1000}, "steps must be at most 999"),
        ({"seed": -1}, "seed must be a whole number in"),
    ])
    def test_editing_errors(self, app, kw, message):
        kw = {"image": photo(), **kw}
        with pytest.raises(app.gr.Error) as info:
            _run_editing(app, kw.pop("image"), **kw)
        assert message in error_message(info.value)

    @pytest.mark.parametrize(("kw", "message"), [
        ({"mode": "image"}, "Image-guided mode needs a style image."),
        ({"text": " "}, "AGG needs a target"),
        ({"skip": NAN}, "skip must be in"),
        ({"reg_weight": NAN}, "reg_weight must be in"),
        ({"steps": 0}, "steps must be a whole number at least 1"),
    ])
    def test_guided_errors(self, app, kw, message):
        with pytest.raises(app.gr.Error) as info:
            _run_guided(app, photo(), **kw)
        assert message in error_message(info.value)

    def test_paired_with_an_editing_preset(self, app):
        with pytest.raises(app.gr.Error, match="not a paired-translation"):
            app.run_paired(photo(), "tiny", 2, 2.0, 0, progress=_no_progress)

    def test_long_prompt_works(self, app):
        gallery, table, files, _ = _run_editing(app, photo(), prompt=LONG_PROMPT + "🐱")
        assert [caption for _, caption in gallery] == ["Source", "SDEdit"] and table["data"][0][2] == 2
        assert all(Path(f).is_file() for f in files)

    @pytest.mark.parametrize(("knob", "value"), [("seed", NAN), ("seed", INF), ("steps", None), ("steps", NAN)])
    def test_non_numbers_name_the_knob(self, app, knob, value):
        """The handlers pass the knobs through unconverted: the core names the bad one (int(nan) in the
        handler gave 'cannot convert float NaN to integer', int(None) a TypeError)."""
        with pytest.raises(app.gr.Error) as info:
            _run_editing(app, photo(), **{knob: value})
        assert error_message(info.value).startswith(f"{knob} ")

    @pytest.mark.parametrize(("handler", "knob", "value"), [
        ("guide", "inner_steps", NAN), ("guide", "lr", None), ("guide", "seed", INF),
        ("translate", "steps", NAN), ("translate", "seed", None)])
    def test_non_numbers_name_the_knob_on_every_tab(self, app, handler, knob, value):
        with pytest.raises(app.gr.Error) as info:
            if handler == "guide":
                _run_guided(app, photo(), **{knob: value})
            else:
                app.run_paired(photo(), "tiny-dit", **{"steps": 2, "guidance": 2.0, "seed": 0, knob: value},
                               progress=_no_progress)
        assert error_message(info.value).startswith(f"{knob} ")

    def test_outputs_stay_in_one_pruned_folder(self, app, app_tmp, monkeypatch):
        """Outputs go to one app folder in TMPDIR (a folder per request, not one per image left forever):
        at most ``OUTPUT_KEEP`` request folders, none older than ``OUTPUT_MAX_AGE``; Gradio's own copies
        are deleted on the same schedule."""
        monkeypatch.setattr(app, "OUTPUT_KEEP", 2)
        runs = []
        for _ in range(3):
            gallery, _, files, _ = _run_editing(app, photo())
            shown = [Path(path) for path, _ in gallery]
            assert len({p.parent for p in shown}) == 1 and files == [str(shown[1])]
            runs.append(shown[0].parent)
        root = app_tmp / app.OUTPUT_FOLDER
        assert list(app_tmp.iterdir()) == [root]
        assert sorted(root.iterdir()) == sorted(runs[1:])  # the oldest request's folder was pruned
        assert sorted(p.name for p in runs[2].iterdir()) == ["sdedit.png", "source.png"]
        old = time.time() - app.OUTPUT_MAX_AGE - 60
        for folder in runs[1:]:
            os.utime(folder, (old, old))
        gallery, *_ = _run_editing(app, photo())
        assert list(root.iterdir()) == [Path(gallery[0][0]).parent]  # both aged folders pruned
        assert app.build_demo().delete_cache == (app.OUTPUT_MAX_AGE, app.OUTPUT_MAX_AGE)
