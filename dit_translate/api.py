"""The task-level API the CLI and the app share: image in, preset defaults applied, result + metrics out.

Methods themselves (``dit_translate.methods``) take loaded models and tensors; this module does the
rest once: load and validate the image, fit it to the preset's working size, pick the preset's
defaults and layer maps, run, and score the result against the source.

Each call holds its model bundle's ``lock`` while it runs (requests from several threads take turns
on a shared model), and running out of memory (``torch.OutOfMemoryError``, the CPU allocator's
"can't allocate memory", ``MemoryError``) becomes a ``MemoryExhaustedError`` that says what to
reduce, after the failed request's tensors are released: the process keeps serving. A ``Deadline``
watching the progress callback stops a request that runs past its time limit the same way
(``TimeLimitError``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import torch
from PIL import Image

from dit_translate import colour, images, metrics, sizes
from dit_translate.errors import MemoryExhaustedError, MissingWeightsError, TimeLimitError
from dit_translate.knobs import check, check_text
from dit_translate.methods import losses
from dit_translate.methods.agg import agg, ddim_baseline
from dit_translate.methods.agg_variants import VARIANT_LOSSES, variant_config
from dit_translate.methods.common import Progress, TranslationResult
from dit_translate.methods.correction import DEFAULT_FEATURES as CORRECTION_FEATURES
from dit_translate.methods.correction import VARIANTS, correct
from dit_translate.methods.pnp import DEFAULT_FEATURES as PNP_FEATURES
from dit_translate.methods.pnp import NEGATIVE_PROMPT as PNP_NEGATIVE
from dit_translate.methods.pnp import default_inversion_steps, pnp
from dit_translate.methods.sdedit import sdedit
from dit_translate.methods.variants import AGG as AGG_VARIANTS
from dit_translate.methods.variants import DEFAULT_AGG, DEFAULT_CORRECTION
from dit_translate.runtime import free_memory, is_out_of_memory, make_generator
from dit_translate.store import Loaded, LoadedPaired, ModelStore, default_store

EDIT_METHODS = ("sdedit", "correct", "pnp")
T = TypeVar("T")


class Deadline:
    """A request's time limit: ``watch(progress)`` is a ``Progress`` callback that raises ``TimeLimitError`` at the
    first step reported after ``seconds`` have passed (the methods report every step). One ``Deadline`` may
    watch several calls of one request (the app's editing tab runs up to three methods under one)."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds, self.what = seconds, what
        self.end = time.monotonic() + seconds

    def check(self) -> None:
        """Raise ``TimeLimitError`` if the time is up."""
        if time.monotonic() > self.end:
            raise TimeLimitError(f"{self.what} was stopped: it ran past its time limit of {self.seconds:g} s; "
                                 "try fewer steps, fewer methods, or a smaller image or preset")

    def watch(self, progress: Progress | None = None) -> Progress:
        """``progress`` (if any), called after checking the time at each step."""

        def report(done: int, total: int, description: str) -> None:
            self.check()
            if progress is not None:
                progress(done, total, description)

        return report


def _within_memory(what: str, run: Callable[[], T]) -> T:
    """``run()``, with running out of memory turned into a ``MemoryExhaustedError`` about ``what``.

    That error, and a ``TimeLimitError`` of a ``Deadline``, are raised anew after the handler has exited, so the
    stopped run's frames and tensors are already released (and the CUDA cache emptied) when the caller sees it.
    """
    try:
        return run()
    except TimeLimitError as e:
        error: Exception = TimeLimitError(str(e))
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        error = MemoryExhaustedError(
            f"not enough memory for {what} ({reason}); try fewer steps, a smaller image or a smaller preset")
    free_memory()
    raise error


@dataclass(frozen=True)
class EditRequest:
    """One editing request; ``None`` knobs take the preset's defaults."""

    method: str
    prompt: str
    strength: float | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    negative_prompt: str | None = None
    variant: str = DEFAULT_CORRECTION
    inversion_steps: int | None = None
    inversion_prompt: str = ""
    size: int | None = None


def _whole_knobs(**knobs: object) -> dict[str, int | None]:
    """Validate the whole-number knobs given before any model loads (``knobs.BOUNDS``); ``seed`` is always
    needed, the step counts may be ``None`` (the preset's default)."""
    out: dict[str, int | None] = {}
    for name, value in knobs.items():
        out[name] = None if value is None and name != "seed" else check(name, value)
    return out


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


MAX_METHODS = len(EDIT_METHODS)


def edit_methods(methods: object) -> tuple[str, ...]:
    """The editing methods of one request (e.g. the app's checkboxes), each once and in the order given; at most
    ``MAX_METHODS`` entries (a list with repeats would multiply one request's time and memory)."""
    if isinstance(methods, (str, bytes)) or not isinstance(methods, Sequence):
        raise ValueError(f"methods must be a list of {', '.join(EDIT_METHODS)}, got {type(methods).__name__}")
    if len(methods) > MAX_METHODS:
        raise ValueError(f"methods: at most {MAX_METHODS} entries (each method once), got {len(methods)}")
    for method in methods:
        if not isinstance(method, str) or method not in EDIT_METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(EDIT_METHODS)}")
    return tuple(dict.fromkeys(methods))


def working_side(size: int | None, default: int, multiple: int) -> int:
    """The working size (longer side, pixels) of a request: ``size`` if given (a multiple of the model's size factor
    ``multiple``, within ``knobs.BOUNDS["size"]``), else ``default``."""
    if size is None:
        return default
    size = check("size", size)
    if size % multiple:
        raise ValueError(f"size {size} is not a multiple of {multiple}, the model's size factor; "
                         f"try {max(multiple, size // multiple * multiple)}")
    return size


def prepare_source(img: Image.Image, loaded: Loaded, size: int | None = None) -> torch.Tensor:
    """Fit an RGB image to the working size (``size``, else the preset's or a ``--model``'s own) -> (1, 3, H, W)
    in [-1, 1]."""
    side = working_side(size, loaded.working_size, loaded.models.size_multiple)
    return images.to_tensor(sizes.to_working_size(img, side, loaded.models.size_multiple))


def edit(
    request: EditRequest,
    image: images.ImageSource | Image.Image,
    *,
    preset: str = "tiny",
    model: str | None = None,
    store: ModelStore | None = None,
    progress: Progress | None = None,
) -> TranslationResult:
    """Run one editing method on ``image`` with ``preset``; adds ``ssim_to_source`` to the metrics."""
    if request.method not in EDIT_METHODS:
        raise ValueError(f"unknown method {request.method!r}; choose one of {', '.join(EDIT_METHODS)}")
    if request.method == "correct" and request.variant not in VARIANTS:
        raise ValueError(f"unknown correction variant {request.variant!r}; choose one of {', '.join(VARIANTS)}")
    check_text("the prompt", request.prompt)
    if not isinstance(request.prompt, str) or not request.prompt.strip():
        raise ValueError("a prompt is required: describe the target, e.g. 'a comic drawing'")
    check_text("the negative prompt", request.negative_prompt)
    check_text("the inversion prompt", request.inversion_prompt)
    request = replace(request, **_whole_knobs(steps=request.steps, inversion_steps=request.inversion_steps,
                                              seed=request.seed, size=request.size))
    img = images.load_image(image)  # a bad image fails before any model is loaded
    return _within_memory(f"{request.method} with preset {preset!r}",
                          lambda: _edit(request, img, (store or default_store()).get(preset, model), progress))


def _edit(request: EditRequest, img: Image.Image, loaded: Loaded, progress: Progress | None) -> TranslationResult:
    with loaded.lock:
        source = prepare_source(img, loaded, request.size)
        result = _run_edit(request, loaded, source, progress)
    result.metrics["ssim_to_source"] = metrics.ssim(result.image, source)
    result.extras.update(preset=loaded.preset.name, untrained=loaded.untrained, source=source, input_size=img.size)
    return result


def _run_edit(request: EditRequest, loaded: Loaded, source: torch.Tensor,
              progress: Progress | None) -> TranslationResult:
    d = loaded.preset.defaults
    common = dict(
        steps=_default(request.steps, d.steps),
        guidance=_default(request.guidance, d.guidance),
        progress=progress,
    )
    if request.method == "pnp":
        strength = 1.0 if request.strength is None else request.strength
        inversion_steps = request.inversion_steps
        if inversion_steps is None:
            inversion_steps = default_inversion_steps(loaded.models, d.pnp_inversion_steps, common["steps"], strength)
        return pnp(
            loaded.models, source, request.prompt,
            inversion_steps=inversion_steps, inversion_prompt=request.inversion_prompt or "",
            negative_prompt=PNP_NEGATIVE if request.negative_prompt is None else request.negative_prompt,
            strength=strength,
            features=loaded.preset.features("pnp", PNP_FEATURES),
            **common,
        )
    kwargs = dict(
        common,
        strength=d.strength if request.strength is None else request.strength,
        negative_prompt=d.negative_prompt if request.negative_prompt is None else request.negative_prompt,
        seed=request.seed,
    )
    if request.method == "sdedit":
        return sdedit(loaded.models, source, request.prompt, **kwargs)
    features = loaded.preset.features("correction", CORRECTION_FEATURES)
    return correct(loaded.models, source, request.prompt, variant=request.variant, features=features, **kwargs)


@dataclass(frozen=True)
class GuideRequest:
    """One AGG request: a target ``text`` (optionally with ``source_text``) or a ``style_image``.

    ``None`` knobs take the preset's defaults.
    """

    text: str | None = None
    source_text: str | None = None
    style_image: images.ImageSource | Image.Image | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    variant: str = DEFAULT_AGG
    size: int | None = None


def guide(
    request: GuideRequest,
    image: images.ImageSource | Image.Image,
    *,
    preset: str = "tiny",
    model: str | None = None,
    store: ModelStore | None = None,
    progress: Progress | None = None,
    options: Mapping[str, Any] | None = None,
) -> TranslationResult:
    """AGG on ``image`` (text- or image-guided) and, for the same seed, the unguided DDIM baseline.

    Returns the AGG result with ``extras["ddim"]`` (the baseline's result) and the metrics
    ``guidance_loss_agg`` / ``guidance_loss_ddim`` (the style loss of each final image, with the
    same augmentations) and ``ssim_to_source`` / ``ssim_to_source_ddim``. ``request.variant`` picks the
    released code's or the paper's AGG (``methods.agg.variant_config``; ``steps=None`` is that variant's grid,
    100); ``options`` are further ``methods.agg.AGGConfig`` fields (windows, etas, loss weights, ablations).
    """
    if request.variant not in AGG_VARIANTS:
        raise ValueError(f"unknown AGG variant {request.variant!r}; choose one of {', '.join(AGG_VARIANTS)}")
    check_text("the target text", request.text)
    check_text("the source text", request.source_text)
    text = (request.text or "").strip()
    if not text and request.style_image is None:
        raise ValueError("AGG needs a target: give a target text or a style image")
    if text and request.style_image is not None:
        raise ValueError("give either a target text or a style image, not both")
    if request.source_text and not text:
        raise ValueError("a source text only applies to text guidance: give a target text too")
    request = replace(request, **_whole_knobs(steps=request.steps, seed=request.seed, size=request.size))
    img = images.load_image(image)  # bad images fail before any model is loaded
    style_img = None if request.style_image is None else images.load_image(request.style_image)
    return _within_memory(f"AGG with preset {preset!r}", lambda: _guide(
        request, text, img, style_img, store or default_store(), preset, model, progress, options))


def _guide(request: GuideRequest, text: str, img: Image.Image, style_img: Image.Image | None, store: ModelStore,
           preset: str, model: str | None, progress: Progress | None, options: Mapping[str, Any] | None,
           ) -> TranslationResult:
    loaded = store.get(preset, model)
    guidance_models = store.guidance(loaded.preset)
    with loaded.lock:
        source = prepare_source(img, loaded, request.size)
        d = loaded.preset.defaults
        how = VARIANT_LOSSES[request.variant]
        if text:
            templates = losses.imagenet_templates() if how["imagenet_templates"] else losses.TEMPLATES
            style = losses.text_guidance(guidance_models.clips(), text, source, request.source_text,
                                         templates=templates, raw_mean=how["raw_mean"])
            prompt, cfg = text, d.guidance if request.guidance is None else request.guidance
        else:
            h, w = source.shape[-2:]
            style = losses.image_guidance(guidance_models.dino(), images.to_tensor(sizes.resize_to(style_img, (w, h))),
                                          pre_norm=how["pre_norm"])
            prompt, cfg = "", 1.0
        config = variant_config(request.variant, steps=request.steps, **(options or {}))
        kwargs = dict(prompt=prompt, guidance=cfg, seed=request.seed, progress=progress)
        baseline = ddim_baseline(loaded.models, source, config, **kwargs)
        result = agg(loaded.models, source, style, config, **kwargs)
        for name, r in (("ddim", baseline), ("agg", result)):
            with torch.no_grad():
                loss = style(r.image.clamp(-1, 1).to(loaded.models.device), make_generator(request.seed))
            r.metrics["ssim_to_source"] = metrics.ssim(r.image, source)
            result.metrics[f"guidance_loss_{name}"] = float(loss)
    result.metrics["ssim_to_source_ddim"] = baseline.metrics["ssim_to_source"]
    result.extras.update(preset=loaded.preset.name, untrained=loaded.untrained, input_size=img.size,
                         untrained_guidance=sorted(guidance_models.untrained), source=source, ddim=baseline,
                         mode="text" if text else "image", variant=request.variant, steps=config.steps)
    return result


def translate(
    image: images.ImageSource | Image.Image,
    *,
    preset: str = "tiny-dit",
    checkpoint: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    size: int | None = None,
    store: ModelStore | None = None,
    progress: Progress | None = None,
) -> TranslationResult:
    """Paired translation of ``image`` (DiT or pix2pix) with the ``checkpoint`` folder, else ``preset``'s.

    The image is fitted to ``size``, else the checkpoint's working size (longer side, aspect kept); ``None`` knobs take the
    checkpoint's defaults. Adds ``ssim_to_source`` to the metrics, for a DiT also ``clip_to_source``
    (``metrics.clip_image_similarity`` with the checkpoint's own CLIP), and whether the weights are untrained.
    """
    knobs = _whole_knobs(steps=steps, seed=seed, size=size)
    img = images.load_image(image)  # a bad image fails before any model is loaded
    what = f"checkpoint {checkpoint}" if checkpoint else f"preset {preset!r}"
    return _within_memory(f"paired translation with {what}", lambda: _translate(
        img, (store or default_store()).get_paired(preset, checkpoint), progress, guidance=guidance, **knobs))


def _translate(img: Image.Image, loaded: LoadedPaired, progress: Progress | None, *, steps: int | None,
               guidance: float | None, seed: int, size: int | None) -> TranslationResult:
    from dit_translate.paired.sampling import translate as translate_paired

    models = loaded.models
    side = working_side(size, models.working_size, models.size_multiple)
    source = images.to_tensor(sizes.to_working_size(img, side, models.size_multiple))
    result = translate_paired(models, source, steps=steps, guidance=guidance, seed=seed, progress=progress)
    result.metrics["ssim_to_source"] = metrics.ssim(result.image, source)
    if models.clip is not None:  # the DiT's own CLIP (pix2pix has none)
        result.metrics["clip_to_source"] = metrics.clip_image_similarity(
            result.image.to(models.device), source.to(models.device), models.clip.embed_image)
    result.extras.update(preset=models.name, untrained=loaded.untrained, clip_untrained=models.clip_untrained,
                         input_size=img.size,
                         source=source)
    return result


@dataclass(frozen=True)
class ClipScores:
    """CLIP scores of some outputs (see ``clip_scores``); ``model`` is None when no CLIP could be loaded."""

    model: str | None
    untrained: bool = False
    text: tuple[float, ...] = ()
    direction: tuple[float, ...] | None = None
    missing: str = ""


def clip_scores(
    images: Sequence[torch.Tensor],
    text: str,
    source: torch.Tensor,
    *,
    source_text: str | None = None,
    preset: str = "tiny",
    store: ModelStore | None = None,
) -> ClipScores:
    """Score outputs (each (1, 3, H, W) in [-1, 1], one size) with the first CLIP of ``preset``'s guidance.

    ``text``: ``metrics.clip_text_score`` of each image against ``text``; with ``source_text`` also
    ``metrics.clip_direction_score`` against ``source`` (1, 3, H, W). A preset whose CLIP cannot be
    loaded (no [guidance] clip, weights missing offline) gives ``ClipScores(None, missing=reason)``.
    """
    try:
        guidance = (store or default_store()).guidance(preset)
        clip = guidance.clips()[0]
    except (ValueError, MissingWeightsError) as e:
        return ClipScores(None, missing=str(e))
    batch = torch.cat(list(images)).float().to(clip.device)
    direction = None
    if source_text:
        direction = tuple(metrics.clip_direction_score(batch, source.float().to(clip.device), text, source_text, clip))
    return ClipScores(clip.name, clip.name in guidance.untrained, tuple(metrics.clip_text_score(batch, text, clip)),
                      direction)


COLORIZE_METHODS = ("pix2pix", "controlnet", "desaturation")
COLORIZE_NOT_BUILT = ("controlnet", "desaturation")
"""Colourisation methods of issue 18 that are planned but not implemented yet (refused, never faked)."""


def colorize(
    image: images.ImageSource | Image.Image,
    *,
    method: str = "pix2pix",
    preset: str = "tiny-colorize",
    checkpoint: str | None = None,
    colorfulness: float = 1.0,
    size: int | None = None,
    space: str = "lab",
    seed: int = 0,
    store: ModelStore | None = None,
) -> TranslationResult:
    """Colourise ``image``; the result has the input's full size and exactly its luminance.

    A colour input is desaturated first (``colour.to_grey``) and the result is also scored against it.
    The model reads the L channel at the working size ``size`` (longer side; default: the preset's
    ``[defaults] size``); its ab is upsampled to the input's size, scaled by ``colorfulness`` and recombined
    with the input's full-size L (``colour.recombine``, ``space`` "lab" or "yuv"). Metrics
    (``metrics.colour_metrics``): colourfulness, and with known true colours CIEDE2000, ab-PSNR and the
    colourfulness gap, each with the grey photo's own value as ``grey_*``; ``luma_error`` is the measured
    max |L_out - L_in| of the float result (the lock; 8-bit saving adds up to ~0.3 L units).
    ``seed`` is accepted for the sampling methods; pix2pix is deterministic.
    """
    if method not in COLORIZE_METHODS:
        raise ValueError(f"unknown colourisation method {method!r}; choose one of {', '.join(COLORIZE_METHODS)}")
    if method in COLORIZE_NOT_BUILT:
        raise ValueError(f"colourisation method {method!r} is not built yet (issue 18); use --method pix2pix")
    if space not in colour.SPACES:
        raise ValueError(f"unknown colour space {space!r}; choose one of {', '.join(colour.SPACES)}")
    colorfulness = float(check("colorfulness", colorfulness))
    size = None if size is None else check("size", size)
    check("seed", seed)
    img = images.load_image(image)  # a bad image fails before any model is loaded
    what = f"colourisation with {f'checkpoint {checkpoint}' if checkpoint else f'preset {preset!r}'}"
    return _within_memory(what, lambda: _colorize(img, (store or default_store()).get_paired(preset, checkpoint),
                                                  colorfulness=colorfulness, size=size, space=space, seed=seed))


def _colorize(img: Image.Image, loaded: LoadedPaired, *, colorfulness: float, size: int | None, space: str,
              seed: int) -> TranslationResult:
    import numpy as np

    from dit_translate.methods.common import timed
    from dit_translate.paired.pix2pix import colorize_ab

    models = loaded.models
    if models.kind != "pix2pix" or not models.net.is_colorizer:
        raise ValueError(f"checkpoint {models.name!r} is not a colouriser (a pix2pix L -> ab model trained on "
                         "the 'colorization' data layout, e.g. preset tiny-colorize)")
    original = np.asarray(img.convert("RGB"))
    truth = None if colour.is_grey(original) else original
    grey = colour.to_grey(original)
    side = size or models.working_size
    w, h = img.size
    scale = side / max(w, h)
    small = sizes.resize_to(img, (max(1, round(w * scale)), max(1, round(h * scale))))
    with timed() as elapsed:  # pix2pix patches nothing: no lock needed
        L = colour.luminance(np.asarray(small))
        chroma = colorize_ab(models.net, L)
        if space == "yuv":  # the ldm demos' Y swap: UV of the model's own colour image, Y of the input
            rgb, _ = colour.gamut_map(np.concatenate([L[..., None], chroma], axis=-1))
            chroma = colour.chroma(rgb, "yuv")
        out = colour.recombine(original, chroma, colorfulness, space=space)
        seconds = elapsed()
    result = TranslationResult(
        method="pix2pix", image=_to_tensor01(out), seconds=seconds, nfe=1,
        metrics={**metrics.colour_metrics(out, truth, grey),
                 "luma_error": colour.lab_lock_error(original, out, space)},
        extras={"preset": models.name, "untrained": loaded.untrained, "colorfulness": colorfulness,
                "space": space, "working_size": [small.width, small.height], "seed": seed,
                "input_was_colour": truth is not None, "trained_steps": models.step,
                "grey": _to_tensor01(grey)},
    )
    return result


def _to_tensor01(rgb) -> torch.Tensor:
    """H x W x 3 float RGB in [0, 1] -> (1, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() * 2 - 1
