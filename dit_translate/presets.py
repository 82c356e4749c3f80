"""Presets: ``presets/*.toml`` files naming a model (hub id or local folder) and its method defaults.

A preset file looks like::

    name = "sd15"
    kind = "stable-diffusion"          # stable-diffusion | pixel
    description = "Stable Diffusion 1.5"
    model = "stable-diffusion-v1-5/stable-diffusion-v1-5"   # hub id, or a folder (relative to the file)
    size = 512                          # working size: the longer image side, in pixels

    [defaults]                          # method knobs (CLI/app defaults)
    steps = 20
    guidance = 7.5
    strength = 0.6

    [layers.correction]                 # optional layer maps (diffusers module names)
    attn_probs = ["up_blocks.1.attentions.0", ...]
    resnet = ["up_blocks.1.resnets.2"]

    [guidance]                          # optional: AGG's guidance models
    clip = ["ViT-B-32/openai"]          # open_clip "arch/pretrained-tag", or "local-dir:folder" (relative to the file)
    dino = "vit_base_patch8_224.dino"   # timm id with its pretrained tag, or "local-dir:folder"
    fallback = "random-tiny"            # optional: UNTRAINED random tiny models for missing local-dir folders

A paired-translation preset has ``kind = "dit"``, names its checkpoint folder in ``model`` and adds
the tables of ``dit_translate.paired.config`` ([dit], [pix2pix], [encoders], [data], [diffusion],
[train]); ``size`` is its image size. ``list_presets()`` returns editing presets unless asked otherwise.

Everything is validated when loaded; a bad field is a ``PresetError`` naming the file and field.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dit_translate.diffusion.features import KINDS, FeatureSet

if TYPE_CHECKING:
    from dit_translate.paired.config import PairedSpec

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
MODEL_KINDS = ("stable-diffusion", "pixel")
FALLBACKS = ("random-sd",)
PAIRED_KINDS = ("dit",)
PAIRED_FALLBACKS = ("random-dit",)
PAIRED_TABLES = ("dit", "pix2pix", "encoders", "data", "diffusion", "train")
GUIDANCE_FALLBACKS = ("random-tiny",)
LOCAL_DIR = "local-dir:"


class PresetError(ValueError):
    """A preset that does not exist or has a bad field."""


@dataclass(frozen=True)
class MethodDefaults:
    """Default knobs of the editing methods for a preset (the app's and CLI's defaults)."""

    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    pnp_inversion_steps: int = 999
    negative_prompt: str = ""


@dataclass(frozen=True)
class GuidanceSpec:
    """The guidance models of AGG named by a preset's ``[guidance]`` table.

    ``clip``: open_clip models as ``"arch/pretrained-tag"`` or ``"local-dir:/absolute/folder"``;
    ``dino``: a timm id with its pretrained tag, or ``"local-dir:/absolute/folder"``; ``fallback``:
    ``"random-tiny"`` builds UNTRAINED random tiny models for ``local-dir`` folders that do not exist.
    """

    clip: tuple[str, ...] = ()
    dino: str | None = None
    fallback: str | None = None


@dataclass(frozen=True)
class Preset:
    """One validated preset. ``model`` is a hub id or an absolute local folder."""

    name: str
    kind: str
    model: str
    description: str
    size: int
    source: Path
    revision: str | None = None
    fallback: str | None = None
    defaults: MethodDefaults = field(default_factory=MethodDefaults)
    layers: dict[str, FeatureSet] = field(default_factory=dict)
    guidance: GuidanceSpec | None = None
    paired: PairedSpec | None = None

    @property
    def is_local(self) -> bool:
        """True when ``model`` is a folder on disk rather than a hub id."""
        return self.model.startswith("/")

    def features(self, method: str, default: FeatureSet) -> FeatureSet:
        """The preset's layer map for ``method`` ("correction", "pnp"), else ``default``."""
        return self.layers.get(method, default)

    def with_model(self, model: str) -> Preset:
        """The same preset pointed at another model (``--model PATH_OR_HUB_ID``)."""
        path = Path(model).expanduser()
        resolved = str(path.resolve()) if path.exists() or model.startswith((".", "/", "~")) else model
        return Preset(self.name, self.kind, resolved, self.description, self.size, self.source, None, None,
                      self.defaults, self.layers, self.guidance, self.paired)


_TOP_KEYS = {"name", "kind", "description", "model", "revision", "size", "fallback", "defaults", "layers", "guidance",
             *PAIRED_TABLES}


def _check(cond: bool, source: Path, message: str) -> None:
    if not cond:
        raise PresetError(f"preset {source.name}: {message}")


def parse_preset(data: dict[str, Any], source: Path) -> Preset:
    """Validate the parsed TOML ``data`` of ``source`` into a ``Preset``."""
    unknown = set(data) - _TOP_KEYS
    _check(not unknown, source, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("name", "kind", "model"):
        _check(isinstance(data.get(key), str) and data[key].strip() != "", source, f"'{key}' must be a non-empty string")
    kinds = MODEL_KINDS + PAIRED_KINDS
    _check(data["kind"] in kinds, source, f"'kind' must be one of {kinds}, got {data['kind']!r}")
    paired_kind = data["kind"] in PAIRED_KINDS
    misplaced = sorted(set(data) & set(PAIRED_TABLES)) if not paired_kind else []
    _check(not misplaced, source, f"table(s) {misplaced} only apply to kind {PAIRED_KINDS}")
    size = data.get("size", 512)
    _check(isinstance(size, int) and not isinstance(size, bool) and 32 <= size <= 2048 and size % 8 == 0,
           source, f"'size' must be an integer multiple of 8 in [32, 2048], got {size!r}")
    fallback = data.get("fallback")
    allowed = PAIRED_FALLBACKS if paired_kind else FALLBACKS
    _check(fallback is None or fallback in allowed, source, f"'fallback' must be one of {allowed}")
    model = data["model"]
    _check(not paired_kind or model.startswith((".", "/")), source,
           "'model' of a dit preset must be a local checkpoint folder (starting with '.', '..' or '/')")
    if model.startswith((".", "/")) or "/" not in model:
        model = str((source.parent / model).resolve())
    return Preset(
        name=data["name"],
        kind=data["kind"],
        model=model,
        description=str(data.get("description", "")),
        size=size,
        source=source,
        revision=data.get("revision"),
        fallback=fallback,
        defaults=_parse_defaults(data.get("defaults", {}), source),
        layers=_parse_layers(data.get("layers", {}), source),
        guidance=_parse_guidance(data["guidance"], source) if "guidance" in data else None,
        paired=_parse_paired(data, size, source) if paired_kind else None,
    )


def _parse_paired(data: dict[str, Any], size: int, source: Path) -> PairedSpec:
    from dit_translate.paired.config import parse_paired

    try:
        return parse_paired(data, size, source.parent)
    except ValueError as e:
        raise PresetError(f"preset {source.name}: {e}") from None


def _parse_defaults(raw: Any, source: Path) -> MethodDefaults:
    _check(isinstance(raw, dict), source, "[defaults] must be a table")
    base = MethodDefaults()
    values = {}
    for key, value in raw.items():
        _check(hasattr(base, key), source, f"unknown [defaults] field {key!r}")
        expected = type(getattr(base, key))
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        _check(ok and not isinstance(value, bool), source, f"[defaults] {key} must be a {expected.__name__}")
        values[key] = expected(value)
    d = MethodDefaults(**{**base.__dict__, **values})
    _check(1 <= d.steps <= 1000, source, "[defaults] steps must be in [1, 1000]")
    _check(1 <= d.pnp_inversion_steps <= 1000, source, "[defaults] pnp_inversion_steps must be in [1, 1000]")
    _check(0 < d.strength <= 1, source, "[defaults] strength must be in (0, 1]")
    _check(0 <= d.guidance <= 100, source, "[defaults] guidance must be in [0, 100]")
    return d


def _parse_layers(raw: Any, source: Path) -> dict[str, FeatureSet]:
    _check(isinstance(raw, dict), source, "[layers] must be a table of tables")
    layers = {}
    for method, table in raw.items():
        _check(isinstance(table, dict), source, f"[layers.{method}] must be a table")
        bad = set(table) - set(KINDS)
        _check(not bad, source, f"[layers.{method}] unknown kind(s) {sorted(bad)}; allowed: {KINDS}")
        for kind, names in table.items():
            _check(isinstance(names, list) and all(isinstance(n, str) for n in names), source,
                   f"[layers.{method}] {kind} must be a list of layer names")
        layers[method] = FeatureSet(**{k: tuple(v) for k, v in table.items()})
    return layers


def _local_dir(spec: str, source: Path, what: str) -> str:
    """``"local-dir:folder"`` with ``folder`` resolved against the preset file's directory."""
    folder = spec[len(LOCAL_DIR):].strip()
    _check(folder != "", source, f"[guidance] {what} {spec!r} names no folder after 'local-dir:'")
    return LOCAL_DIR + str((source.parent / Path(folder).expanduser()).resolve())


def _parse_guidance(raw: Any, source: Path) -> GuidanceSpec:
    _check(isinstance(raw, dict), source, "[guidance] must be a table")
    bad = set(raw) - {"clip", "dino", "fallback"}
    _check(not bad, source, f"unknown [guidance] field(s) {sorted(bad)}; allowed: ['clip', 'dino', 'fallback']")
    clips = raw.get("clip", [])
    _check(isinstance(clips, list) and all(isinstance(c, str) and c.strip() for c in clips), source,
           "[guidance] clip must be a list of open_clip models ('arch/pretrained-tag' or 'local-dir:folder')")
    resolved = []
    for spec in clips:
        if spec.startswith(LOCAL_DIR):
            resolved.append(_local_dir(spec, source, "clip"))
            continue
        arch, _, tag = spec.partition("/")
        _check(bool(arch) and bool(tag) and "/" not in tag and " " not in spec, source,
               f"[guidance] clip {spec!r} must be 'arch/pretrained-tag' (e.g. 'ViT-B-32/openai') or 'local-dir:folder'")
        resolved.append(spec)
    dino = raw.get("dino")
    _check(dino is None or (isinstance(dino, str) and dino.strip() != ""), source,
           "[guidance] dino must be a timm id (e.g. 'vit_base_patch8_224.dino') or 'local-dir:folder'")
    if dino is not None:
        if dino.startswith(LOCAL_DIR):
            dino = _local_dir(dino, source, "dino")
        else:
            _check("/" not in dino and ":" not in dino and " " not in dino, source,
                   f"[guidance] dino {dino!r} must be a timm id such as 'vit_base_patch8_224.dino' or 'local-dir:folder'")
    fallback = raw.get("fallback")
    _check(fallback is None or fallback in GUIDANCE_FALLBACKS, source,
           f"[guidance] fallback must be one of {GUIDANCE_FALLBACKS}")
    local = [s for s in (*resolved, dino) if s is not None and s.startswith(LOCAL_DIR)]
    _check(fallback is None or bool(local), source, "[guidance] fallback only applies to 'local-dir:' models")
    _check(bool(resolved) or dino is not None, source, "[guidance] names no model: give 'clip' and/or 'dino'")
    return GuidanceSpec(tuple(resolved), dino, fallback)


def load_preset(name_or_path: str) -> Preset:
    """Load a preset by name (``presets/<name>.toml``) or by path to a ``.toml`` file.

    A name is a plain file stem: one with a path separator or a leading dot is unknown, never a path.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise PresetError(f"a preset must be a name or a path to a .toml file, got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    if path.suffix != ".toml":
        plain = path.name == str(name_or_path) and not path.name.startswith(".")
        path = PRESET_DIR / f"{name_or_path}.toml" if plain else None
    try:
        text = path.read_text(encoding="utf-8") if path is not None and path.is_file() else None
    except UnicodeDecodeError as e:
        raise PresetError(f"preset {path.name}: not valid TOML ({e})") from None
    except (OSError, ValueError) as e:  # unreadable, name too long, NUL byte in the name
        reason = getattr(e, "strerror", None) or e
        raise PresetError(f"cannot read preset {str(name_or_path)[:80]!r}: {reason}") from None
    if text is None:
        names = ", ".join(p.stem for p in sorted(PRESET_DIR.glob("*.toml")))
        raise PresetError(f"unknown preset {str(name_or_path)[:80]!r}; available presets: {names}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PresetError(f"preset {path.name}: not valid TOML ({e})") from None
    return parse_preset(data, path)


def resolve_preset(preset: str | Preset) -> Preset:
    """``preset`` itself if it is a ``Preset``, else :func:`load_preset` of it (``PresetError`` for anything else)."""
    return preset if isinstance(preset, Preset) else load_preset(preset)


def list_presets(kinds: tuple[str, ...] = MODEL_KINDS) -> list[Preset]:
    """The presets under ``presets/`` whose ``kind`` is in ``kinds`` (default: the editing presets;
    ``PAIRED_KINDS`` for paired translation)."""
    out = []
    for path in sorted(PRESET_DIR.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        if data.get("kind") in kinds:
            out.append(parse_preset(data, path))
    return out
