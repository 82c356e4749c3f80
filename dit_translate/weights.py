"""Where weights come from, and whether they load: the leaf every loader imports.

Hub ids load from the Hugging Face cache or, when online, from the Hub (safetensors and configs only:
pickled weights are never downloaded). Offline without a cached copy a load fails at once with a
``MissingWeightsError`` that names the preset, the missing id and how to get it; weights on disk that
do not load are one ``CorruptWeightsError`` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError

from dit_translate.errors import CorruptWeightsError, MissingWeightsError
from dit_translate.presets import Preset
from dit_translate.refs import shown_path
from dit_translate.runtime import hub_offline, is_out_of_memory
from dit_translate.untrained import untrained_sd_folder

_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
ALLOW_PATTERNS = [
    "*.json",  # model_index.json; a pixel model's config.json / scheduler_config.json
    "diffusion_pytorch_model.safetensors",  # a pixel (UNet2DModel) checkpoint at the repo root
    *(f"{c}/*.json" for c in _COMPONENTS),
    *(f"{c}/*.safetensors" for c in _COMPONENTS),
    "tokenizer/*.txt",
]
IGNORE_PATTERNS = ["*.fp16.*", "*non_ema*", "*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.onnx*"]


@dataclass(frozen=True)
class Availability:
    """Whether a preset's weights can be loaded now, a one-line explanation, and whether its model (for a
    guidance bundle: any of its models) is an UNTRAINED random stand-in for missing tiny-world weights.
    A preset's availability flags its diffusion model only; the detail names untrained guidance models."""

    ok: bool
    detail: str
    untrained: bool = False
    downloads: bool = False
    """Not cached: loads only by downloading from the Hub on first use (online)."""

    @property
    def state(self) -> str:
        """One word or two for a person: "here", "downloads" (on first use), "UNTRAINED" or "not here"."""
        if not self.ok:
            return "not here"
        return "UNTRAINED" if self.untrained else "downloads" if self.downloads else "here"


# ---- checking what is on disk ---------------------------------------------------------------------
def unreadable_weights(folder: Path) -> tuple[Path, str] | None:
    """The first ``*.safetensors`` file under ``folder`` whose header or length is invalid, and why.

    Reads headers only. A safetensors file carries no checksum: flipped bytes inside a tensor's data
    load without error and cannot be detected here.
    """
    from safetensors import safe_open

    for path in sorted(Path(folder).rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for every defect
            return path, str(e)
    return None


@contextmanager
def naming_bad_weights(what: str, folder: str | Path) -> Iterator[None]:
    """Turn a failure to load ``what`` from ``folder`` into one ``CorruptWeightsError`` naming the bad file.

    Out-of-memory errors and ``MissingWeightsError`` pass through unchanged.
    """
    try:
        yield
    except MissingWeightsError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        if is_out_of_memory(e):
            raise
        bad = unreadable_weights(Path(folder))
        if bad is not None:
            detail = f"the weights file {bad[0]} is truncated or corrupt ({bad[1]})"
        else:
            detail = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
        raise CorruptWeightsError(f"cannot load {what} from {shown_path(folder)}: {detail}; restore or re-download it") from e


def is_model_folder(path: Path) -> bool:
    """A diffusers pipeline folder (``model_index.json``) or a single-model folder (``config.json``)."""
    return (path / "model_index.json").is_file() or (path / "config.json").is_file()


def without_safetensors(folder: Path) -> list[str]:
    """The weight folders of a diffusers model folder (``unet``, ``vae``, ``text_encoder``, or the folder itself
    for a pixel model) that hold no ``*.safetensors`` file."""
    parts = [c for c in ("unet", "vae", "text_encoder") if (folder / c).is_dir()] or ["."]
    return [part for part in parts if not any((folder / part).glob("*.safetensors"))]


# ---- the Hugging Face cache and Hub ---------------------------------------------------------------
def cached_snapshot(preset: Preset) -> Path | None:
    """The cached snapshot folder of ``preset``'s hub model, or None; never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(preset.model, revision=preset.revision, allow_patterns=ALLOW_PATTERNS,
                                      ignore_patterns=IGNORE_PATTERNS, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        return None


def fetch_instructions(preset: Preset) -> str:
    return (
        f"download it where the network is available with `hf download {preset.model}` "
        f"(it then loads from the Hugging Face cache), or pass --model /path/to/a/local/copy"
    )


def model_availability(preset: Preset) -> Availability:
    """Can the diffusion model of an editing ``preset`` load right now? Never touches the network."""
    if preset.is_local:
        path = Path(preset.model)
        if is_model_folder(path):
            return Availability(True, f"local folder {shown_path(path)}")
        if preset.fallback:
            return Availability(True, f"UNTRAINED random weights (trained weights missing at {shown_path(path)})", untrained=True)
        return Availability(False, f"missing local folder {shown_path(path)}")
    if cached_snapshot(preset) is not None:
        return Availability(True, f"in the Hugging Face cache ({preset.model})")
    if hub_offline():
        return Availability(False, f"not cached and HF_HUB_OFFLINE=1 ({preset.model})")
    return Availability(True, f"not cached: downloads {preset.model} from the Hugging Face Hub on first use",
                        downloads=True)


def resolve_folder(preset: Preset) -> tuple[Path, bool]:
    """The local folder holding ``preset``'s weights, downloading if allowed; and whether it is untrained."""
    if preset.is_local:
        path = Path(preset.model)
        if is_model_folder(path):
            return path, False
        if preset.fallback == "random-sd":
            return untrained_sd_folder(), True
        raise MissingWeightsError(
            f"preset {preset.name!r}: model folder {shown_path(path)} does not exist or holds no model "
            f"(no model_index.json/config.json); check the preset's 'model' field or pass --model"
        )
    cached = cached_snapshot(preset)
    if cached is not None:
        return cached, False
    if hub_offline():
        raise MissingWeightsError(
            f"preset {preset.name!r} needs {preset.model!r}, which is not in the Hugging Face cache, and "
            f"HF_HUB_OFFLINE=1 forbids downloading it: {fetch_instructions(preset)}"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(preset.model, revision=preset.revision, allow_patterns=ALLOW_PATTERNS,
                                      ignore_patterns=IGNORE_PATTERNS)), False
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one clear message
        raise MissingWeightsError(
            f"preset {preset.name!r}: could not download {preset.model!r} ({type(e).__name__}: {e}); "
            f"{fetch_instructions(preset)}"
        ) from None
