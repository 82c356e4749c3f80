"""dit-translate Gradio app: UI wiring only; all work happens in ``dit_translate``.

Run ``python app.py`` (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT) or
``python app.py --host 0.0.0.0 --port 7860 [--share]``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from dit_translate import api, images  # noqa: E402
from dit_translate.images import ImageError  # noqa: E402
from dit_translate.presets import MODEL_KINDS, PAIRED_KINDS, PresetError, list_presets, load_preset  # noqa: E402
from dit_translate.store import MissingWeightsError, availability, default_store  # noqa: E402

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator elsewhere
    import spaces

    GPU = spaces.GPU
except ImportError:  # pragma: no cover - spaces is in requirements, but keep the core independent

    def GPU(fn=None, **_kw):
        return fn if fn is not None else (lambda f: f)


MAX_SEED = 2**31 - 1
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "examples")
USER_ERRORS = (ImageError, ValueError, PresetError, MissingWeightsError)
METHOD_LABELS = {"sdedit": "SDEdit", "correct": "Correction", "pnp": "PnP"}


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


def preset_choices(kinds: tuple[str, ...] = MODEL_KINDS) -> list[tuple[str, str]]:
    """(label, name) pairs for a preset dropdown, with availability."""
    out = []
    for p in list_presets(kinds):
        a = availability(p)
        out.append((f"{p.name} — {'available' if a.ok else 'weights missing'}", p.name))
    return out


def preset_banner(name: str) -> str:
    """Markdown describing the chosen preset, honest about tiny/untrained weights."""
    try:
        p = load_preset(name)
    except PresetError as e:
        return f"**Preset error:** {e}"
    a = availability(p)
    text = f"**{p.name}**: {p.description} — {a.detail}. Device: `{default_store().device}`."
    if p.name.startswith("tiny"):
        text += (
            "\n\n⚠️ This is the **tiny world**: small models trained on CPU by this project on a handful of "
            "public-domain photos, at 64 px. It shows how the methods behave, not what they can do at scale. "
            "For full quality choose `sd15` or `sd21-base` where their weights are available "
            "(`hf download stable-diffusion-v1-5/stable-diffusion-v1-5`)."
        )
        if "UNTRAINED" in a.detail:
            text += "\n\n⚠️ The tiny-world weights are not trained yet: this runs on **random weights**."
    return text


def _reporter(progress, label: str):
    """Adapt ``gr.Progress`` to the core's ``progress(done, total, desc)`` callback."""

    def report(done: int, total: int, desc: str) -> None:
        progress((done, total), desc=f"{label}: {desc}")

    return report


def _present(image, original):
    """A result tensor (1, 3, h, w) in [-1, 1] -> PIL at the input's aspect ratio (working scale)."""
    out = images.to_pil(image)
    return images.restore_aspect(out, original.size, max_side=max(out.size))


def _save_output(img, name: str) -> str:
    import tempfile

    folder = tempfile.mkdtemp(prefix="dit-translate-")
    return str(images.save_image(img, os.path.join(folder, f"{name}.png")))


@GPU(duration=120)
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
    progress=gr.Progress(),
):
    """SDEdit / correction / PnP side by side: (gallery, metrics rows, downloadable files)."""
    if image is None:
        raise gr.Error("Upload an image first.")
    if not methods:
        raise gr.Error("Choose at least one method.")
    try:
        original = images.load_image(image)
        gallery, rows, files = [], [], []
        for method in methods:
            label = METHOD_LABELS[method] + (f" ({variant})" if method == "correct" else "")
            request = api.EditRequest(
                method=method, prompt=prompt, strength=float(strength), steps=int(steps), guidance=float(guidance),
                seed=int(seed), variant=variant, inversion_steps=int(inversion_steps),
            )
            result = api.edit(request, original, preset=preset, progress=_reporter(progress, label))
            if not gallery:
                gallery.append((_present(result.extras["source"], original), "Source"))
            out = _present(result.image, original)
            gallery.append((out, label))
            rows.append([label, round(result.seconds, 2), result.nfe, round(result.metrics["ssim_to_source"], 3)])
            files.append(_save_output(out, method))
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from None
    return gallery, rows, files


@GPU(duration=180)
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
    progress=gr.Progress(),
):
    """AGG next to the unguided DDIM result of the same seed: (slider pair, gallery, metrics rows, files)."""
    if image is None:
        raise gr.Error("Upload an image first.")
    text_mode = mode == "text"
    if not text_mode and style_image is None:
        raise gr.Error("Image-guided mode needs a style image.")
    try:
        original = images.load_image(image)
        request = api.GuideRequest(
            text=text if text_mode else None,
            source_text=(source_text or None) if text_mode else None,
            style_image=None if text_mode else style_image,
            steps=int(steps), guidance=float(guidance), seed=int(seed),
        )
        options = dict(skip=float(skip), edit=float(edit), eta_edit=float(eta_edit), lr=float(lr),
                       inner_steps=int(inner_steps), reg_weight=float(reg_weight), symmetric=bool(symmetric))
        result = api.guide(request, original, preset=preset, options=options, progress=_reporter(progress, "AGG"))
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from None
    baseline = result.extras["ddim"]
    ddim_img, agg_img = _present(baseline.image, original), _present(result.image, original)
    m = result.metrics
    rows = [
        ["DDIM (unguided)", round(baseline.seconds, 2), baseline.nfe, baseline.extras["unet_backwards"],
         round(m["guidance_loss_ddim"], 3), round(m["ssim_to_source_ddim"], 3)],
        ["AGG", round(result.seconds, 2), result.nfe, result.extras["unet_backwards"],
         round(m["guidance_loss_agg"], 3), round(m["ssim_to_source"], 3)],
    ]
    gallery = [(_present(result.extras["source"], original), "Source"), (ddim_img, "DDIM (unguided)"), (agg_img, "AGG")]
    files = [_save_output(ddim_img, "ddim"), _save_output(agg_img, "agg")]
    return (ddim_img, agg_img), gallery, rows, files


@GPU(duration=60)
def run_paired(image, preset: str, steps: int, guidance: float, seed: int, progress=gr.Progress()):
    """Paired DiT translation: (before/after slider pair, metrics rows, file)."""
    if image is None:
        raise gr.Error("Upload an image first.")
    try:
        original = images.load_image(image)
        result = api.translate(original, preset=preset, steps=int(steps), guidance=float(guidance), seed=int(seed),
                               progress=_reporter(progress, "DiT"))
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from None
    source, out = _present(result.extras["source"], original), _present(result.image, original)
    rows = [[result.method, round(result.seconds, 2), result.nfe, round(result.metrics["ssim_to_source"], 3)]]
    return (source, out), rows, _save_output(out, "paired")


def _seed_row():
    with gr.Row():
        seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
        randomize = gr.Button("Random seed", scale=0)
    randomize.click(lambda: int.from_bytes(os.urandom(4), "little") % MAX_SEED, None, seed)
    return seed


def example_images() -> list[str]:
    if not os.path.isdir(EXAMPLES_DIR):
        return []
    return sorted(
        os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if f.lower().endswith((".png", ".jpg", ".jpeg"))
    )


def build_demo(default_preset: str = "tiny") -> gr.Blocks:
    defaults = load_preset(default_preset).defaults
    examples = example_images()
    with gr.Blocks(title="dit-translate") as demo:
        gr.Markdown("# dit-translate\nDiffusion image-to-image translation, side by side.")
        with gr.Row():
            preset = gr.Dropdown(preset_choices(), value=default_preset, label="Preset (model)")
        banner = gr.Markdown(preset_banner(default_preset))
        preset.change(preset_banner, preset, banner)

        with gr.Tab("Paired translation (DiT)"):
            gr.Markdown(
                "A **Diffusion Transformer conditioned on the CLIP image embedding of the photo**, trained on "
                "paired data (photo -> comic), samples the translation with DDIM and classifier-free guidance."
            )
            with gr.Row():
                with gr.Column():
                    p_image = photo_input(label="Photo", sources=["upload", "clipboard", "webcam"])
                    p_preset = gr.Dropdown(preset_choices(PAIRED_KINDS), value="tiny-dit", label="Paired checkpoint")
                    p_steps = gr.Slider(1, 250, value=25, step=1, label="DDIM steps")
                    p_guidance = gr.Slider(1.0, 10.0, value=2.0, step=0.25, label="Guidance (CFG)")
                    p_seed = _seed_row()
                    p_run = gr.Button("Run", variant="primary")
                with gr.Column():
                    p_slider = gr.ImageSlider(label="Photo | translation", type="pil")
                    p_table = gr.Dataframe(headers=["model", "seconds", "NFE", "SSIM to source"], label="Metrics",
                                           interactive=False)
                    p_file = gr.File(label="Download")
            p_banner = gr.Markdown(preset_banner("tiny-dit"))
            p_preset.change(preset_banner, p_preset, p_banner)
            p_run.click(run_paired, [p_image, p_preset, p_steps, p_guidance, p_seed], [p_slider, p_table, p_file],
                        api_name="translate", concurrency_limit=1, time_limit=300)
            if examples:
                gr.Examples([[e] for e in examples], [p_image])

        with gr.Tab("SDEdit vs. correction"):
            gr.Markdown(
                "SDEdit noises the photo and denoises it towards the prompt; the **semantic-discrepancy "
                "correction** replaces erroneous decoder features of that pass with features of the source "
                "(one extra U-Net pass); **PnP** is the slower inversion-based baseline."
            )
            with gr.Row():
                with gr.Column():
                    image = photo_input(label="Photo", sources=["upload", "clipboard", "webcam"])
                    prompt = gr.Textbox(label="Prompt", value="a comic drawing")
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
                            [("released (1 extra U-Net pass)", "released"), ("trajectory (DDIM inversion)", "trajectory")],
                            value="released", label="Correction variant",
                        )
                        inversion_steps = gr.Slider(
                            10, 999, value=defaults.pnp_inversion_steps, step=1, label="PnP inversion steps"
                        )
                    run = gr.Button("Run", variant="primary")
                with gr.Column():
                    gallery = gr.Gallery(label="Results", columns=4, height="auto")
                    table = gr.Dataframe(
                        headers=["method", "seconds", "U-Net evals (NFE)", "SSIM to source"], label="Metrics",
                        interactive=False,
                    )
                    files = gr.File(label="Download", file_count="multiple")
            inputs = [image, prompt, preset, strength, steps, guidance, seed, methods, variant, inversion_steps]
            run.click(run_editing, inputs, [gallery, table, files], api_name="edit", concurrency_limit=1,
                      time_limit=600)
            if examples:
                gr.Examples([[e, "a comic drawing"] for e in examples], [image, prompt])

        with gr.Tab("Guided translation (AGG)"):
            gr.Markdown(
                "**Asymmetric gradient guidance** inverts the photo, then steers the first third of the "
                "denoising towards a target text (CLIP) or a style image (DINO + pixels): one gradient step "
                "through the U-Net, a cheap refinement that never backpropagates through it, and an update "
                "that guides only the x0 term. Left: the unguided DDIM result of the same seed."
            )
            with gr.Row():
                with gr.Column():
                    g_image = photo_input(label="Photo", sources=["upload", "clipboard", "webcam"])
                    g_mode = gr.Radio([("Text-guided", "text"), ("Image-guided", "image")], value="text",
                                      label="Guidance")
                    g_text = gr.Textbox(label="Target text", value="a comic drawing")
                    g_source_text = gr.Textbox(label="Source text (optional)", placeholder="a photo")
                    g_style = photo_input(label="Style image (image-guided)", sources=["upload", "clipboard"])
                    g_steps = gr.Slider(5, 200, value=50, step=1, label="Steps (respaced grid)")
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
                    g_run = gr.Button("Run", variant="primary")
                with gr.Column():
                    g_slider = gr.ImageSlider(label="DDIM (unguided) | AGG", type="pil")
                    g_gallery = gr.Gallery(label="Results", columns=3, height="auto")
                    g_table = gr.Dataframe(
                        headers=["method", "seconds", "U-Net evals (NFE)", "U-Net backprops", "guidance loss",
                                 "SSIM to source"],
                        label="Metrics (lower guidance loss = closer to the target)", interactive=False,
                    )
                    g_files = gr.File(label="Download", file_count="multiple")
            g_inputs = [g_image, g_mode, g_text, g_source_text, g_style, preset, g_steps, g_guidance, g_seed,
                        g_skip, g_edit, g_eta_edit, g_lr, g_inner, g_reg, g_symmetric]
            g_run.click(run_guided, g_inputs, [g_slider, g_gallery, g_table, g_files], api_name="guide",
                        concurrency_limit=1, time_limit=900)
            if examples:
                gr.Examples([[e, "text", "a comic drawing"] for e in examples], [g_image, g_mode, g_text])

        with gr.Tab("About / models"):
            gr.Markdown(
                "**Methods.** SDEdit (Meng et al., ICLR 2022); semantic-discrepancy correction (Yuan et al., "
                "IEEE/CAA JAS 2025, doi:10.1109/JAS.2024.124800); Plug-and-Play (Tumanyan et al., CVPR 2023); "
                "Asymmetric Gradient Guidance (Kwon & Ye, arXiv:2306.04396).\n\n"
                "**NFE** counts U-Net evaluations per image (a classifier-free-guidance step counts 2)."
            )
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="dit-translate Gradio app")
    parser.add_argument("--host", default=None, help="bind address (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args()
    demo = build_demo()
    demo.queue(max_size=16, default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size="20mb"
    )


if __name__ == "__main__":
    main()
