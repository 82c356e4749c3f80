"""dit-translate Gradio app: UI wiring only; all work happens in ``dit_translate``.

Run ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) or
``python app.py --host 0.0.0.0 --port 7860 [--share]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import numbers
import os
import shutil
import stat
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from dit_translate import about, api, images, runtime, sizes  # noqa: E402
from dit_translate.errors import MemoryExhaustedError, MissingWeightsError, TimeLimitError  # noqa: E402
from dit_translate.images import ImageError  # noqa: E402
from dit_translate.knobs import MAX_TEXT_CHARS  # noqa: E402
from dit_translate.methods.agg import min_steps_for_edit  # noqa: E402
from dit_translate.methods.agg_variants import VARIANT_FIELDS  # noqa: E402
from dit_translate.methods.variants import AGG as AGG_VARIANTS  # noqa: E402
from dit_translate.methods.variants import CORRECTION as CORRECTION_VARIANTS  # noqa: E402
from dit_translate.methods.variants import DEFAULT_AGG, DEFAULT_CORRECTION  # noqa: E402
from dit_translate.presets import PAIRED_KINDS, PresetError, load_preset  # noqa: E402
from dit_translate.store import default_store  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator elsewhere
    import spaces

    GPU = spaces.GPU
except ImportError:  # pragma: no cover - spaces is in requirements, but keep the core independent

    def GPU(fn=None, **_kw):
        return fn if fn is not None else (lambda f: f)


MAX_SEED = 2**31 - 1
MAX_FILE_SIZE = "20mb"
OUTPUT_MAX_SIDE = 2048
"""Results are shown and downloaded at the input's size, up to this longer side (a 16 MP upload gives 2048 px)."""
MAX_PIXELS = 16_000_000
"""Largest image the app accepts (declared width * height; the core's own limit is ``images.DEFAULT_MAX_PIXELS``):
a few-KB file may declare 40 MP, and each costs hundreds of MB to decode."""
QUEUE = {"max_size": 16, "default_concurrency_limit": 1}
"""``demo.queue`` settings of ``main`` (``benchmarks/load.py`` measures the app with them): 16 waiting
requests at most; each endpoint runs one request at a time (its own ``concurrency_limit``)."""
AGG_STEPS, MIN_AGG_STEPS = VARIANT_FIELDS[DEFAULT_AGG]["steps"], min_steps_for_edit()
TIME_LIMITS = {"edit": 120, "guide": 180, "translate": 60}
"""Seconds each endpoint's request may run (``api.Deadline``, checked at every step; also its ZeroGPU duration).
Gradio's ``time_limit`` is not used: it applies to streaming events only, never to ``.click``."""
OUTPUT_FOLDER = f"dit-translate-outputs-{os.getuid()}"
"""The app's output folder in the system temp dir, one per user; used only if it is private (see ``output_root``)."""
OUTPUT_MAX_AGE = 3600
"""Seconds a request's output files are kept (ours in ``output_root()``, Gradio's copies via ``delete_cache``)."""
OUTPUT_KEEP = 100
"""At most this many requests' output folders are kept in ``output_root()`` (the newest)."""
CLIENT_MAX_JOBS = 3
"""Requests one client may have queued or running at once (the shared queue holds ``QUEUE["max_size"]``)."""
CLIENT_UPLOADS = (20, 60)
"""At most this many upload requests per client per this many seconds."""
TRUST_FORWARDED = bool(os.environ.get("SPACE_ID"))
"""Key clients by the last ``x-forwarded-for`` entry (what the Space's proxy saw), only behind that proxy;
elsewhere a client could pick its own key."""
SWEEP_EVERY = 300
"""Seconds between sweeps of the output folder and of Gradio's untracked upload temporaries (and one at start)."""
UPLOAD_TEMP_MAX_AGE = 600
"""Seconds after which a ``tmp*`` file left directly in Gradio's upload folder is deleted: an upload Gradio
refused (e.g. a file named ``..``) leaves its bytes there, tracked by nothing."""
DEFAULT_PRESET, DEFAULT_PAIRED = "tiny", "tiny-dit"
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "examples")
USER_ERRORS = (ImageError, ValueError, PresetError, MissingWeightsError, MemoryExhaustedError, TimeLimitError)
OUT_OF_MEMORY = ("Out of memory: try a smaller image, fewer steps, fewer methods at once, or a smaller preset "
                 "(e.g. tiny).")
METHOD_LABELS = {"sdedit": "SDEdit", "correct": "Correction", "pnp": "PnP"}
PHOTO_SOURCES = ["upload", "clipboard", "webcam"]
log = logging.getLogger("dit_translate.app")


def refuse(message: str) -> gr.Error:
    """A ``gr.Error`` for a user error: one log line, no traceback in the server log."""
    log.warning("refused: %s", " ".join(message.split())[:300])  # one line, whatever the message holds
    return gr.Error(message, print_exception=False)


def photo_input(**kwargs) -> gr.Image:
    """A ``gr.Image`` (type "filepath") that hands the uploaded file's path to ``dit_translate.images`` unopened.

    gr.Image opens uploads with PIL before our code runs, turning a corrupt or hostile file into a
    generic error; here every bad upload gets the project's clear message instead. (An instance
    override, not a subclass: gradio writes a .pyi stub next to any module defining a component.)
    """
    component = gr.Image(type="filepath", **kwargs)
    default = component.preprocess

    def preprocess(payload):
        return default(payload) if payload is None or payload.path is None else payload.path

    component.preprocess = preprocess
    return component


def _name_knobs(**components) -> None:
    """Make bad payloads of these ``gr.Slider`` / ``gr.Number`` inputs from an HTTP client (null, a string, a list,
    NaN, out of bounds) a ``gr.Error`` naming the knob (its keyword), not Gradio's message-less error."""
    for name, component in components.items():
        component.preprocess = _named_preprocess(name, component.preprocess)


def _named_preprocess(name: str, default):
    """``default`` (a component's preprocess) behind a check that the payload is a number, errors naming ``name``."""

    def preprocess(payload):
        if not isinstance(payload, numbers.Real) or isinstance(payload, bool) or math.isnan(payload):
            raise refuse(f"{name} must be a number, got {payload!r}"[:200])
        try:
            return default(payload)
        except gr.Error as e:
            raise refuse(f"{name}: {e.message}") from None

    return preprocess


@contextlib.contextmanager
def user_errors():
    """Turn bad input, missing weights, out-of-memory and time limits into a clear ``gr.Error``; the app keeps
    serving."""
    try:
        yield
    except USER_ERRORS as e:
        raise refuse(str(e)) from None
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        if not runtime.is_out_of_memory(e):
            raise
        runtime.free_memory()
        raise refuse(OUT_OF_MEMORY) from None


def _reporter(progress, label: str, deadline: api.Deadline):
    """Adapt ``gr.Progress`` to the core's ``progress(done, total, desc)`` callback, stopping the request at its
    ``deadline``."""

    def report(done: int, total: int, desc: str) -> None:
        progress((done, total), desc=f"{label}: {desc}")

    return deadline.watch(report)


def _deadline(endpoint: str) -> api.Deadline:
    """The time limit of one request to ``endpoint`` (``TIME_LIMITS``), counting from now."""
    return api.Deadline(TIME_LIMITS[endpoint], f"this {endpoint} request")


def _present(image, original):
    """A result tensor (1, 3, h, w) in [-1, 1] -> PIL at the input's size (longer side at most OUTPUT_MAX_SIDE)."""
    return sizes.output_image(images.to_pil(image), original.size, "input", max_side=OUTPUT_MAX_SIDE)


def _require(**knobs) -> None:
    """Refuse knobs without a value (``None``: a client that sent none); the core validates the rest."""
    for name, value in knobs.items():
        if value is None:
            raise ValueError(f"{name} needs a value, got None")


def output_root() -> Path:
    """The one folder the app writes its outputs to, under the system temp dir."""
    return Path(tempfile.gettempdir()) / OUTPUT_FOLDER


def _private_folder(root: Path) -> None:
    """Create ``root`` with mode 0700, or accept an existing one only if ``lstat`` shows a real folder (not a
    symlink) owned by this user and closed to others; ``OSError`` otherwise."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(0, "not a directory" if not stat.S_ISLNK(info.st_mode) else "it is a symlink")
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(0, "it is not a private folder of this user (owner or mode)")


_outputs_lock = threading.Lock()


def _request_folders(root: Path) -> list[tuple[float, Path]]:
    """``(mtime, folder)`` of the app's own request folders in ``root``: real ``run-*`` folders, never symlinks."""
    folders = []
    for folder in root.glob("run-*"):
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile by another process
            info = folder.lstat()
            if stat.S_ISDIR(info.st_mode):
                folders.append((info.st_mtime, folder))
    return folders


def _prune_outputs(root: Path) -> None:
    """Remove request folders older than ``OUTPUT_MAX_AGE`` and all but the newest ``OUTPUT_KEEP - 1`` (room for
    the next one)."""
    folders = sorted(_request_folders(root), reverse=True)
    now = time.time()
    for rank, (mtime, folder) in enumerate(folders):
        if rank >= OUTPUT_KEEP - 1 or now - mtime > OUTPUT_MAX_AGE:
            shutil.rmtree(folder, ignore_errors=True)


def _save_outputs(shown: dict) -> dict[str, str]:
    """Save one request's images ``{name: PIL image}`` as ``<name>.png`` in a fresh folder of ``output_root()``
    (pruned first); their paths, for the galleries, sliders and downloads (Gradio copies files into its
    cache as they are, without re-encoding). A failure to write is a ``gr.Error`` naming the file."""
    root = output_root()
    try:
        with _outputs_lock:
            _private_folder(root)
            _prune_outputs(root)
            folder = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    except OSError as e:
        reason = e.strerror or str(e)
        raise refuse(f"cannot create an output folder in '{root}': {reason[:1].lower()}{reason[1:]}") from None
    try:
        return {name: str(images.save_image(img, folder / f"{name}.png")) for name, img in shown.items()}
    except ImageError as e:  # it names the file and the reason (a full disk, ...)
        shutil.rmtree(folder, ignore_errors=True)
        raise refuse(str(e)) from None


def _sweep_upload_temps(folder: Path) -> None:
    """Delete ``tmp*`` files (regular files, never symlinks) older than ``UPLOAD_TEMP_MAX_AGE`` directly in
    Gradio's upload ``folder``: bytes of refused uploads that nothing tracks."""
    now = time.time()
    for path in folder.glob("tmp*"):
        with contextlib.suppress(FileNotFoundError):
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > UPLOAD_TEMP_MAX_AGE:
                path.unlink()


def sweep() -> None:
    """Prune the output folder (if it exists and is ours) and Gradio's untracked upload temporaries."""
    from gradio.utils import get_upload_folder

    root = output_root()
    with _outputs_lock, contextlib.suppress(OSError):
        if root.is_dir():
            _private_folder(root)
            _prune_outputs(root)
    with contextlib.suppress(OSError):
        _sweep_upload_temps(Path(get_upload_folder()))


def start_sweeper(every: float = SWEEP_EVERY) -> threading.Event:
    """Sweep now and then every ``every`` seconds in a daemon thread (so files age out without requests);
    setting the returned event stops it."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            sweep()
            if stop.wait(every):
                return

    threading.Thread(target=loop, name="dit-translate-sweeper", daemon=True).start()
    return stop


def client_key(scope: dict) -> str:
    """Who a request comes from: the proxy's view of the client on a Space, else the socket's peer address."""
    if TRUST_FORWARDED:
        for name, value in scope.get("headers", ()):
            if name == b"x-forwarded-for":
                return value.decode("latin-1").split(",")[-1].strip()
    client = scope.get("client")
    return client[0] if client else "?"


class ClientLimits:
    """ASGI middleware: one client may have at most ``CLIENT_MAX_JOBS`` requests in the queue (queued or
    running; ``/queue/join`` and ``/call/*``) and make ``CLIENT_UPLOADS`` uploads per window; past that it gets
    HTTP 429 and the others keep their places in the shared queue. An upload without a file name is a 400, not
    Gradio's 500."""

    def __init__(self, app, demo: gr.Blocks) -> None:
        self.app, self.demo = app, demo
        self.uploads: dict[str, deque[float]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        client = client_key(scope)
        refusal = self._refusal(scope["path"], client)
        if refusal is not None:
            log.warning("refused %s from %s: %s", scope["path"], client, refusal)
            return await _answer(send, 429, refusal)
        started = []

        async def sending(message) -> None:
            started.append(True)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except TypeError:  # Gradio's upload route on a part whose file name is empty ("not a GradioUploadFile")
            if not scope["path"].endswith("/upload") or started:
                raise
            log.warning("refused %s from %s: an upload without a file name", scope["path"], client)
            await _answer(send, 400, "Invalid file name: every uploaded file needs a name.")

    def _refusal(self, path: str, client: str) -> str | None:
        if path.endswith("/queue/join") or "/call/" in path:
            if self._jobs(client) >= CLIENT_MAX_JOBS:
                return f"Too many requests: at most {CLIENT_MAX_JOBS} at a time per client; wait for one to finish."
        elif path.endswith("/upload"):
            count, window = CLIENT_UPLOADS
            if len(self.uploads) > 10_000:  # bound the table under a flood of addresses
                self.uploads.clear()
            recent = self.uploads.setdefault(client, deque())
            now = time.monotonic()
            while recent and now - recent[0] > window:
                recent.popleft()
            if len(recent) >= count:
                return f"Too many uploads: at most {count} per {window} s per client."
            recent.append(now)
        return None

    def _jobs(self, client: str) -> int:
        """The client's requests in the queue now (Gradio drops an event once it has finished)."""
        events = list(getattr(self.demo._queue, "event_ids_to_events", {}).values())
        return sum(1 for e in events if e.request is not None and client_key(e.request.scope) == client)


async def _answer(send, status: int, detail: str) -> None:
    """Send a JSON ``{"detail": ...}`` response with ``status``."""
    headers = [(b"content-type", b"application/json")] + ([(b"retry-after", b"10")] if status == 429 else [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})


def _table(headers: list[str], rows: list[list], clip: api.ClipScores | None = None) -> dict:
    """A metrics table for ``gr.Dataframe``, with one column per CLIP score when ``clip`` scored the rows."""
    columns = {}
    if clip is not None and clip.model is not None:
        suffix = about.untrained_suffix(clip.untrained)
        columns["CLIP text score" + suffix] = clip.text
        if clip.direction is not None:
            columns["CLIP direction score" + suffix] = clip.direction
    return {"headers": [*headers, *columns],
            "data": [[*row, *(round(c[i], 3) for c in columns.values())] for i, row in enumerate(rows)]}


@GPU(duration=TIME_LIMITS["edit"])
def run_editing(
    image,
    prompt: str,
    preset: str,
    strength: float,
    steps: int,
    guidance: float,
    seed: int,
    methods: list[str],
    variant: str,
    inversion_steps: int,
    size: int = 0,
    progress=gr.Progress(),
):
    """SDEdit / correction / PnP side by side: (gallery, metrics table, downloadable files, note)."""
    if image is None:
        raise refuse("Upload an image first.")
    if not methods:
        raise refuse("Choose at least one method.")
    deadline = _deadline("edit")
    with user_errors():
        methods = api.edit_methods(methods)
        _require(strength=strength, steps=steps, guidance=guidance, seed=seed, inversion_steps=inversion_steps)
        original = images.load_image(image, max_pixels=MAX_PIXELS)
        runs = []
        for method in methods:
            label = METHOD_LABELS[method] + (f" ({variant})" if method == "correct" else "")
            request = api.EditRequest(
                method=method, prompt=prompt, strength=strength, steps=steps, guidance=guidance, seed=seed,
                variant=variant, inversion_steps=inversion_steps or None, size=size or None,
            )
            result = api.edit(request, original, preset=preset, progress=_reporter(progress, label, deadline))
            runs.append((method, label, result))
        source = runs[0][2].extras["source"]
        clip = api.clip_scores([r.image for _, _, r in runs], prompt, source, preset=preset)
    paths = _save_outputs({"source": _present(source, original),
                           **{method: _present(r.image, original) for method, _, r in runs}})
    rows = [[label, round(r.seconds, 2), r.nfe, round(r.metrics["ssim_to_source"], 3)] for _, label, r in runs]
    table = _table(["method", "seconds", "U-Net evals (NFE)", "SSIM to source"], rows, clip)
    gallery = [(paths["source"], "Source"), *((paths[method], label) for method, label, _ in runs)]
    return gallery, table, [paths[method] for method, _, _ in runs], about.result_note(runs[0][2], clip)


@GPU(duration=TIME_LIMITS["guide"])
def run_guided(
    image,
    mode: str,
    text: str,
    source_text: str,
    style_image,
    preset: str,
    steps: int,
    guidance: float,
    seed: int,
    skip: float,
    edit: float,
    eta_edit: float,
    lr: float,
    inner_steps: int,
    reg_weight: float,
    symmetric: bool,
    variant: str = DEFAULT_AGG,
    size: int = 0,
    progress=gr.Progress(),
):
    """AGG next to the unguided DDIM result of the same seed: (slider pair, gallery, metrics table, files, note)."""
    if image is None:
        raise refuse("Upload an image first.")
    text_mode = mode == "text"
    if not text_mode and style_image is None:
        raise refuse("Image-guided mode needs a style image.")
    deadline = _deadline("guide")
    with user_errors():
        options = dict(skip=skip, edit=edit, eta_edit=eta_edit, lr=lr, inner_steps=inner_steps, reg_weight=reg_weight,
                       symmetric=symmetric)
        _require(steps=steps, guidance=guidance, seed=seed, **options)
        original = images.load_image(image, max_pixels=MAX_PIXELS)
        request = api.GuideRequest(
            text=text if text_mode else None,
            source_text=(source_text or None) if text_mode else None,
            style_image=None if text_mode else images.load_image(style_image, max_pixels=MAX_PIXELS),
            steps=steps, guidance=guidance, seed=seed, variant=variant, size=size or None,
        )
        result = api.guide(request, original, preset=preset, options=options, progress=_reporter(progress, "AGG", deadline))
        baseline = result.extras["ddim"]
        clip = None
        if text_mode:
            clip = api.clip_scores([baseline.image, result.image], request.text, result.extras["source"],
                                   source_text=request.source_text, preset=preset)
    paths = _save_outputs({"source": _present(result.extras["source"], original),
                           "ddim": _present(baseline.image, original), "agg": _present(result.image, original)})
    m = result.metrics
    rows = [
        ["DDIM (unguided)", round(baseline.seconds, 2), baseline.nfe, baseline.extras["unet_backwards"],
         round(m["guidance_loss_ddim"], 3), round(m["ssim_to_source_ddim"], 3)],
        [f"AGG ({variant})", round(result.seconds, 2), result.nfe, result.extras["unet_backwards"],
         round(m["guidance_loss_agg"], 3), round(m["ssim_to_source"], 3)],
    ]
    table = _table(["method", "seconds", "U-Net evals (NFE)", "U-Net backprops", "guidance loss", "SSIM to source"],
                   rows, clip)
    gallery = [(paths["source"], "Source"), (paths["ddim"], "DDIM (unguided)"), (paths["agg"], "AGG")]
    pair = (paths["ddim"], paths["agg"])
    return pair, gallery, table, list(pair), about.result_note(result, clip)


@GPU(duration=TIME_LIMITS["translate"])
def run_paired(image, preset: str, steps: int, guidance: float, seed: int, progress=gr.Progress()):
    """Paired DiT translation: (before/after slider pair, metrics table, file, note)."""
    if image is None:
        raise refuse("Upload an image first.")
    deadline = _deadline("translate")
    with user_errors():
        _require(steps=steps, guidance=guidance, seed=seed)
        original = images.load_image(image, max_pixels=MAX_PIXELS)
        result = api.translate(original, preset=preset, steps=steps, guidance=guidance, seed=seed,
                               progress=_reporter(progress, "DiT", deadline))
    paths = _save_outputs({"source": _present(result.extras["source"], original),
                           "paired": _present(result.image, original)})
    headers, row = ["model", "seconds", "NFE", "SSIM to source"], [
        result.method, round(result.seconds, 2), result.nfe, round(result.metrics["ssim_to_source"], 3)]
    if "clip_to_source" in result.metrics:
        headers.append("CLIP similarity to source" + about.untrained_suffix(result.extras["clip_untrained"]))
        row.append(round(result.metrics["clip_to_source"], 3))
    return (paths["source"], paths["paired"]), _table(headers, [row]), paths["paired"], about.result_note(result)


@GPU(duration=60)
def run_colorize(image, method: str, colorfulness: float, seed: int, progress=gr.Progress()):
    """Colourisation: (grey | colourised slider pair, metrics table with the grey baseline, file, note)."""
    if image is None:
        raise refuse("Upload an image first.")
    with user_errors():
        _require(colorfulness=colorfulness, seed=seed)
        original = images.load_image(image, max_pixels=MAX_PIXELS)
        result = api.colorize(original, method=method, colorfulness=colorfulness, seed=seed)
    paths = _save_outputs({"grey": images.to_pil(result.extras["grey"]), "colorized": images.to_pil(result.image)})
    m = result.metrics
    known = "ciede2000" in m

    def row(name, seconds, nfe, prefix):
        cells = [name, seconds, nfe, round(m[f"{prefix}colourfulness"], 1)]
        return cells + ([round(m[f"{prefix}ciede2000"], 2), round(m[f"{prefix}ab_psnr"], 2)] if known else [])

    headers = ["result", "seconds", "NFE", "colourfulness"] + (["CIEDE2000 to the true colours", "ab-PSNR (dB)"]
                                                               if known else [])
    rows = [row(f"{result.method} (colourfulness {colorfulness:g})", round(result.seconds, 2), result.nfe, ""),
            row("grey photo (baseline)", 0, 0, "grey_")]
    if known:
        rows.append(["true colours", "", "", round(m["truth_colourfulness"], 1), 0.0, "inf"])
    note = (("The photo was in colour: it was desaturated first and the result is scored against its own colours. "
             if result.extras["input_was_colour"] else "Grey input: no true colours to score against. ")
            + f"The luminance is the input's, exactly (max |L difference| {m['luma_error']:.0e}); grey-SSIM and "
            "L-PSNR are perfect by construction and not shown.\n\n" + about.result_note(result))
    return (paths["grey"], paths["colorized"]), _table(headers, rows), paths["colorized"], note


def _seed_row():
    with gr.Row():
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
        randomize = gr.Button("Random seed", scale=0)
    randomize.click(lambda: int.from_bytes(os.urandom(4), "little") % MAX_SEED, None, seed, api_visibility="private")
    return seed


def example_path(name: str) -> str:
    return os.path.join(EXAMPLES_DIR, name)


def _size_input() -> gr.Number:
    """The working-size control (longer side in pixels; 0 = the preset's own size)."""
    return gr.Number(0, precision=0, minimum=0, maximum=1024, label="Working size, longer side in pixels (0 = the "
                     "preset's; a multiple of the model's size factor)")


def _examples(fn, inputs: list, outputs: list, overrides: list[dict], visible: list, api_name: str) -> None:
    """Examples from ``assets/examples`` computed on first click and then cached (Gradio's cache folder).

    Each row holds every input: the components' defaults with ``overrides`` ({component: value}) applied,
    so a cached result always matches the knobs shown.
    """
    gr.Examples([[o.get(c, c.value) for c in inputs] for o in overrides], inputs, outputs, fn=fn,
                cache_examples=True, cache_mode="lazy", visible_columns=[inputs.index(c) for c in visible],
                api_name=api_name, label="Examples (computed on first click, then cached)")


def build_demo(default_preset: str = DEFAULT_PRESET) -> gr.Blocks:
    defaults, paired_defaults = load_preset(default_preset).defaults, load_preset(DEFAULT_PAIRED).defaults
    device = str(default_store().device)
    with gr.Blocks(title="dit-translate", delete_cache=(OUTPUT_MAX_AGE, OUTPUT_MAX_AGE)) as demo:
        gr.Markdown("# dit-translate\nDiffusion image-to-image translation, side by side.")
        with gr.Row():
            preset = gr.Dropdown(about.preset_options(), value=default_preset, label="Preset (model)")
        banner = gr.Markdown(about.preset_summary(default_preset, device))
        preset.change(lambda name: about.preset_summary(name, device), preset, banner, api_visibility="private")

        with gr.Tab("Paired translation (DiT)"):
            gr.Markdown(
                "A **Diffusion Transformer conditioned on the CLIP image embedding of the photo**, trained on "
                "paired data (photo -> comic), samples the translation with DDIM and classifier-free guidance."
            )
            with gr.Row():
                with gr.Column():
                    p_image = photo_input(label="Photo", sources=PHOTO_SOURCES)
                    p_preset = gr.Dropdown(about.preset_options(PAIRED_KINDS), value=DEFAULT_PAIRED,
                                           label="Paired checkpoint")
                    p_steps = gr.Slider(1, 250, value=paired_defaults.steps, step=1, label="DDIM steps")
                    p_guidance = gr.Slider(1.0, 10.0, value=paired_defaults.guidance, step=0.25,
                                           label="Guidance (CFG)")
                    p_seed = _seed_row()
                    p_run = gr.Button("Run", variant="primary")
                with gr.Column():
                    p_slider = gr.ImageSlider(label="Photo | translation", type="filepath")
                    p_note = gr.Markdown()
                    p_table = gr.Dataframe(headers=["model", "seconds", "NFE", "SSIM to source"], label="Metrics",
                                           interactive=False)
                    p_file = gr.File(label="Download")
            p_banner = gr.Markdown(about.preset_summary(DEFAULT_PAIRED, device))
            p_preset.change(lambda name: about.preset_summary(name, device), p_preset, p_banner,
                            api_visibility="private")
            _name_knobs(steps=p_steps, guidance=p_guidance, seed=p_seed)
            p_inputs, p_outputs = [p_image, p_preset, p_steps, p_guidance, p_seed], [p_slider, p_table, p_file, p_note]
            p_run.click(run_paired, p_inputs, p_outputs, api_name="translate", concurrency_limit=1)
            _examples(run_paired, p_inputs, p_outputs,
                      [{p_image: example_path("coffee.jpg")}, {p_image: example_path("chelsea.jpg")}],
                      [p_image], "translate_example")

        with gr.Tab("Colourisation"):
            gr.Markdown(
                "**Colourise a photo** keeping its luminance exactly, at its full size: the model predicts the "
                "CIELAB chroma (ab) from the L channel, which is upsampled and recombined with the input's own L. "
                "A colour photo is desaturated first and scored against its own colours. Built: the **pix2pix** "
                "L -> ab baseline (tiny world: `tiny-colorize`); ControlNet and Diffusing Colors are not built yet."
            )
            with gr.Row():
                with gr.Column():
                    c_image = photo_input(label="Photo (grey or colour)", sources=PHOTO_SOURCES)
                    c_method = gr.Dropdown(["pix2pix"], value="pix2pix", label="Method")
                    c_colorfulness = gr.Slider(0.0, 2.0, value=1.0, step=0.05,
                                               label="Colourfulness (0 = grey, 1 = the model's colours)")
                    c_seed = _seed_row()
                    c_run = gr.Button("Run", variant="primary")
                with gr.Column():
                    c_slider = gr.ImageSlider(label="Grey | colourised", type="filepath")
                    c_note = gr.Markdown()
                    c_table = gr.Dataframe(headers=["result", "seconds", "NFE", "colourfulness"], label="Metrics",
                                           interactive=False)
                    c_file = gr.File(label="Download")
            _name_knobs(colorfulness=c_colorfulness, seed=c_seed)
            c_inputs, c_outputs = [c_image, c_method, c_colorfulness, c_seed], [c_slider, c_table, c_file, c_note]
            c_run.click(run_colorize, c_inputs, c_outputs, api_name="colorize", concurrency_limit=1)
            _examples(run_colorize, c_inputs, c_outputs,
                      [{c_image: example_path("coffee.jpg")}, {c_image: example_path("chelsea.jpg")}],
                      [c_image], "colorize_example")

        with gr.Tab("SDEdit vs. correction"):
            gr.Markdown(
                "SDEdit noises the photo and denoises it towards the prompt; the **semantic-discrepancy "
                "correction** replaces erroneous decoder features of that pass with features of the source "
                "(one extra U-Net pass); **PnP** is the slower inversion-based baseline."
            )
            with gr.Row():
                with gr.Column():
                    image = photo_input(label="Photo", sources=PHOTO_SOURCES)
                    prompt = gr.Textbox(label="Prompt", value="a comic drawing", max_length=MAX_TEXT_CHARS)
                    strength = gr.Slider(0.05, 1.0, value=defaults.strength, step=0.05, label="Strength")
                    steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="Steps")
                    guidance = gr.Slider(1.0, 15.0, value=defaults.guidance, step=0.5, label="Guidance")
                    seed = _seed_row()
                    methods = gr.CheckboxGroup(
                        [("SDEdit", "sdedit"), ("Correction", "correct"), ("PnP (slow)", "pnp")],
                        value=["sdedit", "correct"], label="Methods",
                    )
                    with gr.Accordion("Advanced", open=False):
                        variant = gr.Radio(
                            [(f"{name}: {text}", name) for name, text in CORRECTION_VARIANTS.items()],
                            value=DEFAULT_CORRECTION, label="Correction variant",
                        )
                        inversion_steps = gr.Slider(
                            0, 999, value=0, step=1,
                            label="PnP inversion grid (0 = automatic: the preset's when it holds every sampling "
                                  "timestep, else the sampling grid)")
                        size = _size_input()
                    run = gr.Button("Run", variant="primary")
                with gr.Column():
                    gallery = gr.Gallery(label="Results", columns=4, height="auto")
                    note = gr.Markdown()
                    table = gr.Dataframe(
                        headers=["method", "seconds", "U-Net evals (NFE)", "SSIM to source"], label="Metrics",
                        interactive=False,
                    )
                    files = gr.File(label="Download", file_count="multiple")
            _name_knobs(strength=strength, steps=steps, guidance=guidance, seed=seed, inversion_steps=inversion_steps,
                        size=size)
            inputs = [image, prompt, preset, strength, steps, guidance, seed, methods, variant, inversion_steps, size]
            outputs = [gallery, table, files, note]
            run.click(run_editing, inputs, outputs, api_name="edit", concurrency_limit=1)
            _examples(run_editing, inputs, outputs,
                      [{image: example_path("chelsea.jpg")},
                       {image: example_path("coffee.jpg"), prompt: "a watercolor painting", strength: 0.7}],
                      [image, prompt, strength], "edit_example")

        with gr.Tab("Guided translation (AGG)"):
            gr.Markdown(
                "**Asymmetric gradient guidance** inverts the photo, then steers the first third of the "
                "denoising towards a target text (CLIP) or a style image (DINO + pixels): one gradient step "
                "through the U-Net, a cheap refinement that never backpropagates through it, and an update "
                "that guides only the x0 term. Left: the unguided DDIM result of the same seed."
            )
            with gr.Row():
                with gr.Column():
                    g_image = photo_input(label="Photo", sources=PHOTO_SOURCES)
                    g_mode = gr.Radio([("Text-guided", "text"), ("Image-guided", "image")], value="text",
                                      label="Guidance")
                    g_text = gr.Textbox(label="Target text", value="a comic drawing", max_length=MAX_TEXT_CHARS)
                    g_source_text = gr.Textbox(label="Source text (optional; adds the CLIP direction score)",
                                               max_length=MAX_TEXT_CHARS,
                                               placeholder="a photo")
                    g_style = photo_input(label="Style image (image-guided)", sources=["upload", "clipboard"])
                    g_steps = gr.Slider(MIN_AGG_STEPS, 200, value=AGG_STEPS, step=1,
                                        label="Steps (respaced grid; AGG's own is 100)")
                    g_guidance = gr.Slider(1.0, 15.0, value=defaults.guidance, step=0.5, label="Text CFG")
                    g_seed = _seed_row()
                    with gr.Accordion("Advanced", open=False):
                        g_skip = gr.Slider(0.0, 0.9, value=0.4, step=0.05, label="Skip fraction (start at ~0.6T)")
                        g_edit = gr.Slider(0.0, 0.6, value=0.2, step=0.05, label="Edit window (fraction of grid)")
                        g_eta_edit = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="eta in the edit window")
                        g_lr = gr.Slider(0.001, 0.2, value=0.02, step=0.001, label="AdamW lr (refinement)")
                        g_inner = gr.Slider(1, 10, value=1, step=1, label="Refinement steps K")
                        g_reg = gr.Slider(0.0, 1000.0, value=200.0, step=10.0, label="Structure regulariser weight")
                        g_symmetric = gr.Checkbox(False, label="Symmetric update (ablation)")
                    g_variant = gr.Radio([(f"{name}: {text}", name) for name, text in AGG_VARIANTS.items()],
                                         value=DEFAULT_AGG, label="AGG variant")
                    with gr.Accordion("Working size", open=False):
                        g_size = _size_input()
                    g_run = gr.Button("Run", variant="primary")
                with gr.Column():
                    g_slider = gr.ImageSlider(label="DDIM (unguided) | AGG", type="filepath")
                    g_gallery = gr.Gallery(label="Results", columns=3, height="auto")
                    g_note = gr.Markdown()
                    g_table = gr.Dataframe(
                        headers=["method", "seconds", "U-Net evals (NFE)", "U-Net backprops", "guidance loss",
                                 "SSIM to source"],
                        label="Metrics (lower guidance loss = closer to the target)", interactive=False,
                    )
                    g_files = gr.File(label="Download", file_count="multiple")
            _name_knobs(steps=g_steps, guidance=g_guidance, seed=g_seed, skip=g_skip, edit=g_edit, eta_edit=g_eta_edit,
                        lr=g_lr, inner_steps=g_inner, reg_weight=g_reg, size=g_size)
            g_inputs = [g_image, g_mode, g_text, g_source_text, g_style, preset, g_steps, g_guidance, g_seed,
                        g_skip, g_edit, g_eta_edit, g_lr, g_inner, g_reg, g_symmetric, g_variant, g_size]
            g_outputs = [g_slider, g_gallery, g_table, g_files, g_note]
            g_run.click(run_guided, g_inputs, g_outputs, api_name="guide", concurrency_limit=1)
            _examples(run_guided, g_inputs, g_outputs,
                      [{g_image: example_path("chelsea.jpg"), g_source_text: "a photo"},
                       {g_image: example_path("coffee.jpg"), g_text: "a pencil sketch"},
                       {g_image: example_path("chelsea.jpg"), g_mode: "image", g_text: "",
                        g_style: example_path("coffee.jpg")}],
                      [g_image, g_mode, g_text, g_style, g_steps], "guide_example")

        with gr.Tab("About / models") as about_tab:
            store_status = gr.Markdown(about.store_status(default_store()))
            gr.Markdown("## Presets\n" + about.presets_markdown() + "\n\n## Methods\n\n" + about.methods_markdown()
                        + "\n\n**NFE** counts U-Net evaluations per image (a classifier-free-guidance step counts 2)."
                        "\n\n## Tiny-world model cards")
            for title, folder in about.tiny_model_cards():
                card = about.model_card(folder)
                with gr.Accordion(title if card else f"{title} — not shipped yet", open=False):
                    if card is None:
                        gr.Markdown(f"*Not shipped yet*: `{folder}` holds no model card (the tiny world is being "
                                    "trained; until it lands the presets fall back to UNTRAINED random weights).")
                    for part in card or []:
                        if isinstance(part, str):
                            gr.Markdown(part)
                        else:
                            gr.Image(str(part), label=part.name, interactive=False, show_label=True)
            about_tab.select(lambda: about.store_status(default_store()), None, store_status, queue=False,
                             show_progress="hidden", api_visibility="private")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="dit-translate Gradio app")
    parser.add_argument("--host", default=None, help="bind address (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args(argv)
    cache = os.path.join(".gradio", "cached_examples", about.examples_cache_key([DEFAULT_PRESET, DEFAULT_PAIRED]))
    os.environ.setdefault("GRADIO_EXAMPLES_CACHE", cache)  # Gradio's own folder, one per weights state
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    start_sweeper()  # old outputs and untracked uploads go now and every SWEEP_EVERY s, with or without requests
    demo = build_demo()
    demo.queue(**QUEUE).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE,
        app_kwargs=launch_app_kwargs(demo),
    )


def launch_app_kwargs(demo: gr.Blocks) -> dict:
    """The FastAPI options of ``main``'s launch: the per-client limits (``ClientLimits``)."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(ClientLimits, demo=demo)]}


if __name__ == "__main__":
    main()
