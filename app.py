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
from dit_translate.presets import PresetError, list_presets, load_preset  # noqa: E402
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


def preset_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for the preset dropdown, with availability."""
    out = []
    for p in list_presets():
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

            def report(done: int, total: int, desc: str, label=label) -> None:
                progress((done, total), desc=f"{label}: {desc}")

            request = api.EditRequest(
                method=method, prompt=prompt, strength=float(strength), steps=int(steps), guidance=float(guidance),
                seed=int(seed), variant=variant, inversion_steps=int(inversion_steps),
            )
            result = api.edit(request, original, preset=preset, progress=report)
            if not gallery:
                source = images.to_pil(result.extras["source"])
                gallery.append((images.restore_aspect(source, original.size, max_side=max(source.size)), "Source"))
            out = images.to_pil(result.image)
            out = images.restore_aspect(out, original.size, max_side=max(out.size))
            gallery.append((out, label))
            rows.append([label, round(result.seconds, 2), result.nfe, round(result.metrics["ssim_to_source"], 3)])
            files.append(_save_output(out, method))
    except USER_ERRORS as e:
        raise gr.Error(str(e)) from None
    return gallery, rows, files


def _save_output(img, method: str) -> str:
    import tempfile

    folder = tempfile.mkdtemp(prefix="dit-translate-")
    return str(images.save_image(img, os.path.join(folder, f"{method}.png")))


def example_images() -> list[str]:
    if not os.path.isdir(EXAMPLES_DIR):
        return []
    return sorted(
        os.path.join(EXAMPLES_DIR, f) for f in os.listdir(EXAMPLES_DIR) if f.lower().endswith((".png", ".jpg", ".jpeg"))
    )


def build_demo(default_preset: str = "tiny") -> gr.Blocks:
    defaults = load_preset(default_preset).defaults
    with gr.Blocks(title="dit-translate") as demo:
        gr.Markdown("# dit-translate\nDiffusion image-to-image translation, side by side.")
        with gr.Row():
            preset = gr.Dropdown(preset_choices(), value=default_preset, label="Preset (model)")
        banner = gr.Markdown(preset_banner(default_preset))
        preset.change(preset_banner, preset, banner)

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
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                        randomize = gr.Button("🎲", scale=0)
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
            randomize.click(lambda: int.from_bytes(os.urandom(4), "little") % MAX_SEED, None, seed)
            inputs = [image, prompt, preset, strength, steps, guidance, seed, methods, variant, inversion_steps]
            run.click(run_editing, inputs, [gallery, table, files], api_name="edit", concurrency_limit=1,
                      time_limit=600)
            examples = example_images()
            if examples:
                gr.Examples([[e, "a comic drawing"] for e in examples], [image, prompt])

        with gr.Tab("About / models"):
            gr.Markdown(
                "**Methods.** SDEdit (Meng et al., ICLR 2022); semantic-discrepancy correction (Yuan et al., "
                "IEEE/CAA JAS 2025, doi:10.1109/JAS.2024.124800); Plug-and-Play (Tumanyan et al., CVPR 2023).\n\n"
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
