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

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from dit_translate.diffusion.spec import KINDS, FeatureSet
from dit_translate.errors import PresetError
from dit_translate.knobs import check
from dit_translate.paired.config import TABLES, PairedSpec, parse_paired
from dit_translate.refs import is_local_dir, resolve_clip_ref, resolve_timm_ref

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
MODEL_KINDS = ("stable-diffusion", "pixel")
FALLBACKS = ("random-sd",)
PAIRED_KINDS = ("dit",)
PAIRED_FALLBACKS = ("random-dit",)
PAIRED_TABLES = tuple(TABLES)
GUIDANCE_FALLBACKS = ("random-tiny",)


@dataclass(frozen=True)
class MethodDefaults:
    """Default knobs of the editing methods for a preset (the app's and CLI's defaults)."""

    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    pnp_inversion_steps: int = 999
    negative_prompt: str = ""
    size: int = 0
    """Paired presets only: the longer side images are fitted to for translation (0: the training ``size``)."""


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
        return dataclasses.replace(self, model=resolved, revision=None, fallback=None)


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
    _check(paired_kind or "size" not in (data.get("defaults") if isinstance(data.get("defaults"), dict) else {}), source,
           "[defaults] size is for paired presets; an editing preset's working size is the top-level 'size'")
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
    for key in ("steps", "pnp_inversion_steps", "strength", "guidance"):
        try:
            check(key, getattr(d, key), f"[defaults] {key}")
        except ValueError as e:
            raise PresetError(f"preset {source.name}: {e}") from None
    _check(d.size == 0 or (32 <= d.size <= 2048 and d.size % 8 == 0), source,
           "[defaults] size must be 0 or a multiple of 8 in [32, 2048]")
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


def _ref(resolve, spec: str, source: Path, what: str) -> str:
    """``resolve(spec, preset folder, what)`` (a ``refs`` checker), its ``ValueError`` as a ``PresetError``."""
    try:
        return resolve(spec, source.parent, what)
    except ValueError as e:
        raise PresetError(f"preset {source.name}: {e}") from None


def _parse_guidance(raw: Any, source: Path) -> GuidanceSpec:
    _check(isinstance(raw, dict), source, "[guidance] must be a table")
    bad = set(raw) - {"clip", "dino", "fallback"}
    _check(not bad, source, f"unknown [guidance] field(s) {sorted(bad)}; allowed: ['clip', 'dino', 'fallback']")
    clips = raw.get("clip", [])
    _check(isinstance(clips, list) and all(isinstance(c, str) and c.strip() for c in clips), source,
           "[guidance] clip must be a list of open_clip models ('arch/pretrained-tag' or 'local-dir:folder')")
    resolved = [_ref(resolve_clip_ref, spec, source, "[guidance] clip") for spec in clips]
    dino = raw.get("dino")
    _check(dino is None or (isinstance(dino, str) and dino.strip() != ""), source,
           "[guidance] dino must be a timm id (e.g. 'vit_base_patch8_224.dino') or 'local-dir:folder'")
    if dino is not None:
        dino = _ref(resolve_timm_ref, dino, source, "[guidance] dino")
    fallback = raw.get("fallback")
    _check(fallback is None or fallback in GUIDANCE_FALLBACKS, source,
           f"[guidance] fallback must be one of {GUIDANCE_FALLBACKS}")
    local = [s for s in (*resolved, dino) if s is not None and is_local_dir(s)]
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
