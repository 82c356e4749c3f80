"""What the app says about its models: methods and papers, presets, honest weight notes, model cards.

Plain strings and paths (markdown); the UI only displays them. Everything here is what a user
must be told to read a result correctly: which weights produced it, whether they are trained, and
how to get the full models.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dit_translate.presets import (
    MODEL_KINDS,
    PAIRED_KINDS,
    PresetError,
    list_presets,
    load_preset,
)
from dit_translate.refs import LOCAL_DIR
from dit_translate.runtime import hub_offline
from dit_translate.store import availability

if TYPE_CHECKING:
    from dit_translate.api import ClipScores
    from dit_translate.methods.common import TranslationResult
    from dit_translate.store import ModelStore


@dataclass(frozen=True)
class Method:
    """A method shown in the app: what it does (two lines) and its paper."""

    name: str
    summary: tuple[str, str]
    paper: str
    url: str


METHODS = (
    Method("SDEdit", ("Noises the photo part of the way, then denoises it towards the prompt.",
                      "Strength trades faithfulness to the photo for following the prompt."),
           "Meng et al., SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations, "
           "ICLR 2022", "https://arxiv.org/abs/2108.01073"),
    Method("Semantic-discrepancy correction",
           ("SDEdit plus one U-Net pass on the clean source, whose decoder self-attention maps replace the "
            "erroneous ones of the SDEdit pass (the ResBlock features too in the 'full' variant).",
            "Training-free; keeps the layout that SDEdit's noise breaks, at about SDEdit's cost."),
           "Yuan et al., Dissecting and Mitigating Semantic Discrepancy in Stable Diffusion for "
           "Image-to-Image Translation, IEEE/CAA J. Autom. Sinica 2025", "https://doi.org/10.1109/JAS.2024.124800"),
    Method("Plug-and-Play (PnP)", ("DDIM-inverts the photo, then regenerates it with the prompt while injecting "
                                   "the inversion's decoder features and self-attention.",
                                   "Faithful structure, at the cost of a long inversion."),
           "Tumanyan et al., Plug-and-Play Diffusion Features for Text-Driven Image-to-Image Translation, "
           "CVPR 2023", "https://arxiv.org/abs/2211.12572"),
    Method("Asymmetric Gradient Guidance (AGG)",
           ("Steers the early denoising steps towards a target text (CLIP) or style image (DINO): one gradient "
            "step through the U-Net, then a cheap refinement of the x0 estimate only.",
            "Training-free, text- or image-guided; shown next to the unguided DDIM result of the same seed."),
           "Kwon & Ye, Improving Diffusion-based Image Translation using Asymmetric Gradient Guidance, "
           "arXiv 2023", "https://arxiv.org/abs/2306.04396"),
    Method("Paired translation with a CLIP-conditioned DiT",
           ("A Diffusion Transformer trained on paired data (photo -> comic) whose condition is the CLIP image "
            "embedding of the photo.",
            "Trained once per task; then one DDIM sampling with classifier-free guidance per image."),
           "Zhu et al., Image-to-Image Translation with Diffusion Transformers and CLIP-Based Image "
           "Conditioning, arXiv 2025", "https://arxiv.org/abs/2505.16001"),
    Method("Diffusion Transformer (DiT)", ("The backbone of the paired method: a ViT over latent patches, "
                                          "conditioned through adaptive layer norm.",
                                          "Replaces the U-Net of latent diffusion; scales with width and depth."),
           "Peebles & Xie, Scalable Diffusion Models with Transformers, ICCV 2023",
           "https://arxiv.org/abs/2212.09748"),
)


def methods_markdown() -> str:
    """The methods, two lines each, with a link to each paper."""
    return "\n\n".join(f"**{m.name}**  \n{m.summary[0]}  \n{m.summary[1]}  \nPaper: [{m.paper}]({m.url})"
                       for m in METHODS)


# ---- presets and honest labels ------------------------------------------------------------------
def is_tiny(name: str) -> bool:
    """True for the tiny world's presets (toy models trained on 64 px crops on CPU by this project)."""
    return name.startswith("tiny")


def full_models_hint(paired: bool = False) -> str:
    """How to run full-size models instead of the tiny world."""
    if paired:
        return ("For a full model, train a paired checkpoint (`python -m dit_translate train --config "
                "presets/face2comics.toml --data DIR --out checkpoints/face2comics`) and choose `face2comics`.")
    return (f"For full models choose preset `sd15` with its weights in the Hugging Face cache "
            f"(`hf download {load_preset('sd15').model}`; AGG's CLIP and DINO as named in `presets/sd15.toml`).")


def preset_options(kinds: tuple[str, ...] = MODEL_KINDS) -> list[tuple[str, str]]:
    """(label, name) pairs for a preset selector, each label saying whether its weights are here."""
    return [(f"{p.name} — {_status(availability(p))}", p.name) for p in list_presets(kinds)]


def _status(a) -> str:
    return {"not here": "not cached" if hub_offline() else "weights missing", "UNTRAINED": "UNTRAINED fallback",
            "downloads": "downloads on first use", "here": "weights here"}[a.state]


def preset_summary(name: str, device: str) -> str:
    """Markdown describing preset ``name`` on ``device``, honest about tiny and UNTRAINED weights."""
    try:
        p = load_preset(name)
    except PresetError as e:
        return f"**Preset error:** {e}"
    a = availability(p)
    text = f"**{p.name}**: {p.description} — {a.detail}. Device: `{device}`."
    if is_tiny(p.name):
        text += ("\n\n⚠️ This is the **tiny world**: small models trained on CPU by this project on 64 px crops of "
                 "a handful of public-domain photos (they run at 96 px). It shows how the methods behave, not what "
                 "they can do at scale. "
                 + full_models_hint(p.paired is not None))
        if a.untrained:
            text += "\n\n⚠️ The tiny-world weights are not shipped yet: this runs on **UNTRAINED random weights**."
    return text


def presets_markdown() -> str:
    """Every preset (editing and paired): its description and whether its weights are here."""
    return "\n".join(f"- **{p.name}** ({p.kind}): {p.description} — {availability(p).detail}"
                     for p in list_presets(MODEL_KINDS + PAIRED_KINDS))


def _short(spec: str) -> str:
    return Path(spec.removeprefix(LOCAL_DIR)).name if spec.startswith(LOCAL_DIR) else spec


def result_note(result: TranslationResult, clip: ClipScores | None = None) -> str:
    """Markdown for next to a result: which weights made it (tiny, UNTRAINED), how to get full models,
    and why CLIP scores are missing or meaningless."""
    preset = str(result.extras.get("preset", ""))
    paired = result.method in ("dit", "pix2pix")
    lines = []
    if result.extras.get("untrained"):
        lines.append(f"⚠️ Made with **UNTRAINED random weights** (`{preset}`: its trained weights are not shipped "
                     "yet): it shows the plumbing, not the method.")
    elif is_tiny(preset):
        lines.append(f"Made with the **tiny world** (`{preset}`: a toy model trained on 64 px crops on CPU by this "
                     "project): it shows how the method behaves, not what it can do.")
    untrained = [_short(s) for s in result.extras.get("untrained_guidance", ())]
    if result.extras.get("clip_untrained"):
        untrained.append("clip")
    if clip is not None and clip.untrained:
        untrained.append(_short(clip.model))
    if untrained:
        lines.append(f"⚠️ UNTRAINED random {', '.join(dict.fromkeys(untrained))}: the CLIP scores and guidance "
                     "losses computed with them are not meaningful.")
    if lines:
        lines.append(full_models_hint(paired))
    if clip is not None and clip.model is None:
        lines.append(f"No CLIP scores: {clip.missing}")
    return "\n\n".join(lines)


def untrained_suffix(untrained: bool) -> str:
    """Appended to a score's column name when the model behind it is an UNTRAINED fallback."""
    return " (UNTRAINED CLIP)" if untrained else ""


def store_status(store: ModelStore) -> str:
    """Markdown: the device and what the store holds in memory now."""
    loaded = store.loaded()
    held = ", ".join(f"{kind}: `{name}`" for kind, name in loaded.items()) or "nothing yet (models load on first use)"
    return f"Device: `{store.device}` ({str(store.dtype).removeprefix('torch.')}). Loaded now: {held}."


def examples_cache_key(presets: Sequence[str]) -> str:
    """A short hash of the weights state (availability) of ``presets``: cached example results are kept
    per state, so results made with UNTRAINED fallbacks are not shown once trained weights arrive."""
    details = [f"{name}={availability(load_preset(name)).detail}" for name in presets]
    return hashlib.sha1("\n".join(details).encode()).hexdigest()[:12]


# ---- model cards --------------------------------------------------------------------------------
_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n.*?^---[ \t]*(?:\r?\n|\Z)", re.S | re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")


def strip_front_matter(text: str) -> str:
    """``text`` without a leading YAML front matter block (``---`` ... ``---``)."""
    return _FRONT_MATTER.sub("", text, count=1)


def tiny_model_cards() -> list[tuple[str, Path]]:
    """(title, folder) of the tiny world's model folders, as the presets name them."""
    tiny, dit = load_preset("tiny"), load_preset("tiny-dit")
    return [("Tiny Stable Diffusion (editing, AGG)", Path(tiny.model)),
            ("Tiny open_clip (AGG text guidance, DiT condition, CLIP scores)",
             Path(tiny.guidance.clip[0].removeprefix(LOCAL_DIR))),
            ("Tiny paired DiT (photo -> comic)", Path(dit.model)),
            ("Tiny DINO (AGG image guidance)", Path(tiny.guidance.dino.removeprefix(LOCAL_DIR)))]


def model_card(folder: str | Path) -> list[str | Path] | None:
    """The ``README.md`` of a model folder as markdown chunks and image files, in reading order.

    The YAML front matter is dropped. An image reference becomes the path of the file when it names
    a file inside ``folder``; anything else (a missing file, a path outside, a URL) becomes its alt
    text in italics, so nothing is fetched from elsewhere. None when the folder has no card.
    """
    folder = Path(folder).resolve()
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = strip_front_matter(readme.read_text(encoding="utf-8"))
    parts: list[str | Path] = []
    pending, pos = "", 0
    for m in _IMAGE.finditer(text):
        pending += text[pos:m.start()]
        pos = m.end()
        target = (folder / m.group(2)).resolve()
        if "://" in m.group(2) or not target.is_relative_to(folder) or not target.is_file():
            pending += f"*({m.group(1) or 'image'})*"
            continue
        if pending.strip():
            parts.append(pending)
        parts.append(target)
        pending = ""
    pending += text[pos:]
    if pending.strip():
        parts.append(pending)
    return parts
