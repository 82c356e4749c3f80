"""Evaluate the tiny world: held-out VAE PSNR, loss-curve PNG and the exported folder's model card."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image, ImageDraw

from dit_translate.tiny.data import (
    HELD_OUT, PHOTOS, STYLES, TinyDataset, caption, load_photos, resize, style_caption, to_tensor,
)
from dit_translate.tiny.build import final_vae
from dit_translate.tiny.train_vae import DECODER_STAGE

_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


@torch.no_grad()
def vae_psnr(vae: AutoencoderKL, size: int = 64, crops_per_photo: int = 16, seed: int = 1) -> dict[str, float]:
    """Mean PSNR (dB, images in [0,255]) of deterministic (posterior-mean) reconstructions of
    random crops of the held-out photos, per style; keys are the style names."""
    data = TinyDataset("test", size, crops_per_photo, seed=seed)
    styles = np.array(data.styles)
    x = data.images.float() / 127.5 - 1.0
    recon = torch.cat([vae.decode(vae.encode(c).latent_dist.mean).sample for c in x.split(64)])
    mse = ((recon.clamp(-1, 1) - x) * 127.5).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    return {s: float(psnr[torch.from_numpy(styles == s)].mean()) for s in STYLES}


@torch.no_grad()
def style_retrieval(clip, size: int = 64, crops_per_photo: int = 16, seed: int = 1) -> dict[str, float]:
    """Top-1 accuracy of image -> style caption retrieval on crops of the held-out photos.

    ``clip`` is an ``encoders.ClipEncoder``. Keys: ``"style_only"`` (queries "a comic drawing", ...),
    ``"with_content"`` (queries "a comic drawing of a cat", ... with the photo's own content words,
    which never occur in training), and per-style accuracies of the style-only queries.
    """
    data = TinyDataset("test", size, crops_per_photo, seed=seed)
    truth = torch.tensor([STYLES.index(s) for s in data.styles])
    images = clip.embed_image(data.images.float() / 127.5 - 1.0)
    pred_style = (images @ clip.embed_text([style_caption(s) for s in STYLES]).T).argmax(1)
    hits = pred_style == truth
    out = {"style_only": float(hits.float().mean())}
    content_hits = []
    for name in dict.fromkeys(data.photo_names):
        rows = torch.tensor([n == name for n in data.photo_names])
        queries = clip.embed_text([caption(s, PHOTOS[name]) for s in STYLES])
        content_hits.append((images[rows] @ queries.T).argmax(1) == truth[rows])
    out["with_content"] = float(torch.cat(content_hits).float().mean())
    out.update({s: float(hits[truth == i].float().mean()) for i, s in enumerate(STYLES)})
    return out


def read_curve(path: str | Path, column: str = "loss") -> tuple[list[int], list[float]]:
    """(steps, values) of one column of a training ``loss.csv``."""
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], [float(r[column]) for r in rows]


def plot_curves(curves: dict[str, tuple[list[int], list[float]]], out: str | Path,
                size: tuple[int, int] = (640, 360)) -> Path:
    """Draw named loss curves (log-scale y, each normalised to its own x range) into a PNG."""
    w, h = size
    left, right, top, bottom = 60, 20, 20, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    values = [v for _, ys in curves.values() for v in ys if v > 0]
    lo, hi = math.log10(min(values)), math.log10(max(values))
    hi = hi if hi > lo else lo + 1
    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5):
            y = h - bottom - (k + math.log10(m) - lo) / (hi - lo) * (h - top - bottom)
            if top <= y <= h - bottom:
                draw.line([left - 4, y, left, y], fill="black")
                draw.text((4, y - 6), f"{m * 10.0**k:.3g}", fill="black")
    draw.text((left, h - bottom + 8), "training progress (each curve: step 0 .. its last step)", fill="black")
    for i, (name, (steps, ys)) in enumerate(curves.items()):
        color = _COLORS[i % len(_COLORS)]
        last = max(steps[-1], 1)
        pts = [(left + s / last * (w - left - right), h - bottom - (math.log10(v) - lo) / (hi - lo) * (h - top - bottom))
               for s, v in zip(steps, ys) if v > 0]
        draw.line(pts, fill=color, width=2)
        draw.text((w - right - 200, top + 8 + 14 * i), f"{name} (last step {steps[-1]})", fill=color)
    img.save(out)
    return Path(out)


def example_inputs(size: int = 64) -> dict[str, np.ndarray]:
    """Centre-square crops of the held-out photos, uint8 (size,size,3), keyed by content words."""
    out = {}
    for name, img in load_photos("test").items():
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        out[PHOTOS[name]] = resize(img[top : top + side, left : left + side], size)
    return out


@torch.no_grad()
def sample_grid(folder: str | Path, out: str | Path, strength: float = 0.6, steps: int = 20,
                guidance: float = 5.0, seed: int = 0) -> Path:
    """PNG grid: per held-out photo, the input, its VAE reconstruction and SD img2img (SDEdit)
    results for each non-photo style prompt; each tile is the model's native size, upscaled x3."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(folder, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rows = []
    for content, img in example_inputs(size).items():
        x = to_tensor(img)[None]
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample[0]
        tiles = [img, ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()]
        for style in STYLES[1:]:
            result = pipe(caption(style, content), image=Image.fromarray(img), strength=strength,
                          num_inference_steps=steps, guidance_scale=guidance,
                          generator=torch.Generator().manual_seed(seed)).images[0]
            tiles.append(np.asarray(result))
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(out)
    return Path(out)


def _csv_tail(path: Path) -> dict[str, str]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def write_model_card(folder: str | Path, work: str | Path) -> Path:
    """Write ``README.md``, ``loss_curve.png``, ``samples.png`` and ``eval.json`` into ``folder``."""
    folder, work = Path(folder), Path(work)
    vae = AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True).eval()
    psnr = vae_psnr(vae)
    tuned = final_vae(work).parent == work / DECODER_STAGE  # the exported VAE is stage 1b's
    stages = (("VAE", "vae"),) + ((("VAE decoder fine-tune", DECODER_STAGE),) if tuned else ()) + (("U-Net+text", "sd"),)
    curves = {f"{name} loss": read_curve(work / stage / "loss.csv") for name, stage in stages}
    plot_curves(curves, folder / "loss_curve.png")
    sample_grid(folder, folder / "samples.png")
    vae_last, sd_last = _csv_tail(work / "vae" / "loss.csv"), _csv_tail(work / "sd" / "loss.csv")
    vae_cfg = json.loads((work / "vae" / "train_config.json").read_text())
    sd_cfg = json.loads((work / "sd" / "train_config.json").read_text())
    step = json.loads((folder / "training_step.json").read_text())
    results = {"heldout_vae_psnr_db": psnr, "vae_last": vae_last, "sd_last": sd_last, **step}
    decoder_line = ""
    if tuned:
        dec_last = results["decoder_last"] = _csv_tail(work / DECODER_STAGE / "loss.csv")
        dec_cfg = json.loads((work / DECODER_STAGE / "train_config.json").read_text())
        decoder_line = f"""
- VAE decoder fine-tune (stage 1b, as Stability's `sd-vae-ft-mse`): encoder and `quant_conv` frozen
  (latents unchanged), decoder trained {dec_last.get("step", "?")} more steps with the same loss, AdamW lr
  {dec_cfg["lr"]}, batch {dec_cfg["batch_size"]}, on the training crops plus {dec_cfg["synthetic"]}
  dead-leaves images (`data.dead_leaves`) in every style, which are harder to reconstruct than the photo
  crops (its loss curve sits above stage 1's) and make the decoder better on unseen photos (table below)."""
    (folder / "eval.json").write_text(json.dumps(results, indent=2))
    train_photos = ", ".join(n for n in PHOTOS if n not in HELD_OUT)
    psnr_rows = "\n".join(f"| {s} | {v:.2f} |" for s, v in psnr.items())
    vae_params = sum(p.numel() for p in vae.parameters())
    card = f"""---
license: cc0-1.0
library_name: diffusers
tags: [stable-diffusion, toy, tiny]
---
# dit-translate tiny Stable Diffusion (toy world)

A Stable-Diffusion-style model (diffusers folder: `vae`, `text_encoder`, `tokenizer`, `unet`,
`scheduler`) trained from scratch on CPU by `python -m dit_translate.tiny build`. It exists so
that every editing method of dit-translate runs offline on real (if tiny) trained weights, with
exactly the code path used for Stable Diffusion 1.5/2.1. **It is a toy**: 64x64 pixels, trained
on {len(PHOTOS) - len(HELD_OUT)} photos; it cannot generate or edit real-world images well.

## Data
Public-domain / CC0 images that ship inside the scikit-image wheel (`skimage.data`):
{train_photos}. Held out entirely (never trained on): {", ".join(HELD_OUT)}.
Random square crops (30-100% of the short side, flips) at 64 px, each rendered in the styles
{", ".join(STYLES)} with classical filters (`dit_translate/tiny/data.py`). Captions:
"a photo of ...", "a comic drawing of ...", "a pencil sketch of ...", "a watercolor painting of
...", e.g. "a comic drawing of an astronaut".

## Recipe
- VAE: `AutoencoderKL`, blocks {vae_cfg["model"]["block_out_channels"]} (x4 downsampling), 4 latent
  channels, {vae_params / 1e6:.2f} M params; loss MSE + {vae_cfg["l1_weight"]} L1 +
  {vae_cfg["grad_weight"]} image-gradient L1 + {vae_cfg["kl_weight"]} KL; AdamW lr {vae_cfg["lr"]},
  batch {vae_cfg["batch_size"]}, {vae_last.get("step", "?")} steps. `scaling_factor`
  = 1/std of the latents = {vae.config.scaling_factor:.4f}.{decoder_line}
- Text encoder: `CLIPTextModel` (hidden {sd_cfg["text"]["hidden_size"]},
  {sd_cfg["text"]["num_hidden_layers"]} layers) with the standard CLIP BPE tokenizer, trained
  jointly with the U-Net.
- U-Net: `UNet2DConditionModel` with Stable Diffusion 1.x's block layout (CrossAttnDownBlock2D x3
  + DownBlock2D / UpBlock2D + CrossAttnUpBlock2D x3, 2 layers per block), channels
  {sd_cfg["unet"]["block_out_channels"]}, on 4x16x16 latents.
- Diffusion: DDPM scaled_linear betas 0.00085..0.012, 1000 steps, epsilon prediction; caption
  dropout {sd_cfg["caption_dropout"]} (classifier-free guidance); AdamW lr {sd_cfg["lr"]}, batch
  {sd_cfg["batch_size"]}; EMA decay {sd_cfg["ema_decay"]}. Exported at step
  {step["stage2_step"]} ({"EMA" if step["ema"] else "raw"} weights). Sampling scheduler: DDIM.

![loss curves](loss_curve.png)

Last logged losses: VAE {vae_last.get("loss", "?")} (step {vae_last.get("step", "?")}),
U-Net {sd_last.get("loss", "?")} (step {sd_last.get("step", "?")}).

## Samples (held-out photos)
Columns: input, VAE reconstruction, then img2img (SDEdit, strength 0.6, 20 DDIM steps,
guidance 5) with the prompts {", ".join(repr(caption(s, "<content>")) for s in STYLES[1:])}.

![samples](samples.png)

## Held-out evaluation
VAE reconstruction PSNR (dB) on 64 px crops of the held-out photos:

| style | PSNR |
|---|---|
{psnr_rows}

## Limits
Tiny capacity, 64 px, a handful of photos and four synthetic styles: outputs are blurry and the
model knows only the words of its captions. Use it to exercise and test the methods, not to judge
their quality; the real presets (Stable Diffusion) do that.
"""
    (folder / "README.md").write_text(card)
    return folder / "README.md"


def write_clip_card(folder: str | Path, work: str | Path) -> Path:
    """Write ``README.md``, ``loss_curve.png`` and ``eval.json`` of the exported tiny open_clip folder."""
    import open_clip

    from dit_translate.encoders import ClipEncoder

    folder, work = Path(folder), Path(work)
    name = f"local-dir:{folder}"
    clip = ClipEncoder.from_model(open_clip.create_model(name, weights_only=True), open_clip.get_tokenizer(name), name)
    retrieval = style_retrieval(clip)
    cfg = json.loads((work / "train_config.json").read_text())
    meta = json.loads((folder / "open_clip_config.json").read_text())["dit_translate"]
    last = _csv_tail(work / "loss.csv")
    (folder / "eval.json").write_text(json.dumps({"heldout_style_retrieval_top1": retrieval, "last": last, **meta}, indent=2))
    plot_curves({"contrastive loss": read_curve(work / "loss.csv")}, folder / "loss_curve.png")
    params = sum(p.numel() for p in clip.model.parameters())
    rows = "\n".join(f"| {s} | {retrieval[s]:.1%} |" for s in STYLES)
    card = f"""---
license: cc0-1.0
library_name: open_clip
tags: [clip, toy, tiny]
---
# dit-translate tiny open_clip (toy world)

An `open_clip.CLIP` ({params / 1e6:.2f} M params: 64 px ViT, patch {cfg["model"]["vision_cfg"]["patch_size"]},
{cfg["model"]["vision_cfg"]["layers"]} layers; text transformer {cfg["model"]["text_cfg"]["layers"]} layers,
CLIP's BPE vocabulary) trained from scratch on CPU by `python -m dit_translate.tiny build --stages clip`,
in open_clip's `local-dir` layout. It is the CLIP of the tiny world: AGG's text guidance, the tiny
DiT's conditioning and the CLIP metrics use it offline.

## Data and recipe
The tiny world's crops (see `../sd/README.md`): {len(PHOTOS) - len(HELD_OUT)} scikit-image photos,
random crops at 64 px in true and random colours, each rendered as {", ".join(STYLES)}; captions
such as "a comic drawing of an astronaut", and with probability {cfg["style_only"]} the style alone
("a comic drawing"). Multi-positive contrastive loss (pairs with equal captions are positives),
AdamW lr {cfg["lr"]}, batch {cfg["batch_size"]}, {last.get("step", "?")} steps; exported at step
{meta["training_step"]} ({"EMA" if meta["ema"] else "raw"} weights).

![loss curve](loss_curve.png)

## Held-out evaluation
Image -> style retrieval (top-1 over the four style captions) on 64 px crops of the held-out photos
({", ".join(HELD_OUT)}): **{retrieval["style_only"]:.1%}** with style-only captions,
{retrieval["with_content"]:.1%} with captions naming the content ("a comic drawing of a cat").

| style | top-1 (style-only captions) |
|---|---|
{rows}

## Limits
It knows only the words of its captions and four synthetic styles; it is no substitute for a real
CLIP when judging real images.
"""
    (folder / "README.md").write_text(card)
    return folder / "README.md"


def _tile_grid(rows: list[list[torch.Tensor]], scale: int = 3) -> Image.Image:
    """Rows of (3,H,W) images in [-1,1] -> one PIL grid, upscaled ``scale`` x (nearest)."""
    grid = torch.cat([torch.cat(row, dim=-1) for row in rows], dim=-2)
    img = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)


def heldout_pairs(crops_per_photo: int = 12, seed: int = 1, style: str = "comic", size: int = 64,
                  split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """(photos, renderings) of random crops of the held-out photos (``split="train"``: of the training
    photos, for the generalisation gap): two (N,3,size,size) tensors in [-1,1].

    With the defaults these are exactly the ``test/`` pairs of ``data.write_pairs``.
    """
    data = TinyDataset(split, size, crops_per_photo, styles=("photo", style), seed=seed)
    x = data.images.float() / 127.5 - 1.0
    return x[0::2], x[1::2]


def dit_vs_sdedit(folder: str | Path, sd: str | Path, sources: torch.Tensor, targets: torch.Tensor,
                  prompt: str = "a comic drawing", strength: float = 0.6, seed: int = 0
                  ) -> tuple[dict[str, dict[str, float]], torch.Tensor, torch.Tensor]:
    """Mean PSNR/SSIM to ``targets`` of: the untranslated ``sources``, SDEdit on the tiny SD folder ``sd``
    (``prompt``, ``strength``, the tiny preset's steps/guidance; seed ``seed + i`` for image i) and the
    DiT checkpoint ``folder`` (its default steps/guidance, one generator seeded ``seed``).

    Returns ``({"photo"|"sdedit"|"dit": {"psnr", "ssim"}}, sdedit outputs, dit outputs)``; images in [-1,1].
    """
    from dit_translate.diffusion.models import DiffusionModels
    from dit_translate.methods.sdedit import sdedit
    from dit_translate.metrics import psnr, ssim
    from dit_translate.paired.translate import load_paired, translate_batch
    from dit_translate.presets import load_preset

    models = load_paired(folder)
    defaults = load_preset("tiny").defaults
    sd_models = DiffusionModels.from_pipeline_folder(sd, device=torch.device("cpu"), dtype=torch.float32)
    edited = torch.cat([sdedit(sd_models, src[None], prompt, strength=strength, steps=defaults.steps,
                               guidance=defaults.guidance, seed=seed + i).image.cpu() for i, src in enumerate(sources)])
    translated = translate_batch(models, sources, steps=int(models.defaults.get("steps", 25)),
                                 guidance=float(models.defaults.get("guidance", 2.0)),
                                 generator=torch.Generator().manual_seed(seed)).cpu()
    scores = {name: {"psnr": float(np.mean([psnr(o, t) for o, t in zip(out, targets)])),
                     "ssim": float(np.mean([ssim(o, t) for o, t in zip(out, targets)]))}
              for name, out in (("photo", sources), ("sdedit", edited), ("dit", translated))}
    return scores, edited, translated


def beats(scores: dict[str, dict[str, float]], a: str, b: str) -> bool:
    """Whether output ``a`` is closer to the target than ``b`` in both PSNR and SSIM (``dit_vs_sdedit`` scores)."""
    return scores[a]["psnr"] > scores[b]["psnr"] and scores[a]["ssim"] > scores[b]["ssim"]


def dit_bar_met(scores: dict[str, dict[str, float]]) -> bool:
    """The tiny DiT's quality bar: closer to the comic target than the untranslated photo and than SDEdit."""
    return beats(scores, "dit", "photo") and beats(scores, "dit", "sdedit")


PREDICTION_LABELS = {"epsilon": "noise", "v_prediction": "v (velocity)", "sample": "clean-latent (x0)"}
"""What the DiT's MSE is on, by ``[diffusion] prediction_type``."""


def write_dit_card(folder: str | Path, run: str | Path, sd: str | Path, history: str = "") -> Path:
    """Write ``README.md``, ``loss_curve.png``, ``comparison.png`` and ``eval.json`` of the exported DiT;
    ``history`` (markdown) tells how the run departed from the recipe, if it did."""
    folder, run = Path(folder), Path(run)
    sources, targets = heldout_pairs()
    scores, edited, translated = dit_vs_sdedit(folder, sd, sources, targets)
    seen = dit_vs_sdedit(folder, sd, *heldout_pairs(crops_per_photo=2, split="train"))[0]
    ceiling = vae_psnr(AutoencoderKL.from_pretrained(Path(sd) / "vae", use_safetensors=True).eval())["comic"]
    _tile_grid([list(r) for r in list(zip(sources, edited, translated, targets))[:6]]).save(folder / "comparison.png")
    last = _csv_tail(run / "loss.csv")
    (folder / "eval.json").write_text(json.dumps({"pairs": len(sources), "scores": scores, "training_photos": seen,
                                                  "last": last}, indent=2))
    from dit_translate.paired.checkpoint import read_meta

    meta, spec = read_meta(folder)
    dit, train = meta["spec"]["dit"], meta["spec"]["train"]
    target = PREDICTION_LABELS[spec.diffusion.prediction_type]
    curves = {f"{target} MSE": read_curve(run / "loss.csv", "mse")}
    if "clip" in (run / "loss.csv").read_text().splitlines()[0].split(","):
        curves["CLIP loss"] = read_curve(run / "loss.csv", "clip")
    plot_curves(curves, folder / "loss_curve.png")
    labels = {"dit": "DiT (this model)", "photo": "input photo (untranslated)",
              "sdedit": "SDEdit, tiny SD, \"a comic drawing\", strength 0.6"}
    rows = "\n".join(f"| {labels[k]} | {v['psnr']:.2f} | {v['ssim']:.3f} |" for k, v in scores.items())
    gap = (f"on new crops of the *training* photos it is {seen['dit']['psnr']:.2f} dB / {seen['dit']['ssim']:.3f} "
           f"against the photo's {seen['photo']['psnr']:.2f} dB / {seen['photo']['ssim']:.3f}")
    if dit_bar_met(scores):
        verdict = (f"**Bar met**: the DiT is closer to the comic target than the untranslated photo and than "
                   f"SDEdit, in PSNR and in SSIM; {gap}.")
    else:
        verdict = (f"**Bar not met**: the DiT is not closer to the comic target than both the untranslated photo and "
                   f"SDEdit in PSNR and SSIM; {gap}.")
    card = f"""---
license: cc0-1.0
tags: [dit, image-to-image, toy, tiny]
---
# dit-translate tiny paired DiT: photo -> comic (toy world)

A CLIP-conditioned Diffusion Transformer (`dit_translate.paired.dit.PairedDiT`, size
{dit["size"]!r}, patch {dit["patch"]}) trained from scratch on CPU by
`python -m dit_translate.tiny build --stages dit` (that is, `python -m dit_translate train --config
presets/tiny-dit.toml`), in the latent space of the tiny VAE (`../sd/vae`), conditioned on the
tiny open_clip's image embedding of the photo (`../clip`). **Not the paper's configuration**: the
source latent is also concatenated to the noisy latent (`source_concat = true`), because a single
global CLIP vector cannot carry the layout of a photo the model never saw; the paper-faithful
configuration is `presets/face2comics.toml`.

## Data and recipe
Pairs photo | comic-filter rendering of 64 px crops of the tiny world's training photos (see
`../sd/README.md`): 384 crops per photo, half of them recoloured first (random channel order and
gains), plus half as many synthetic dead-leaves images (occluding shapes of power-law sizes, muted
colours, shading and texture: `tiny.data.dead_leaves`) and their renderings, so that the filter's
local rule is learnt rather than the fourteen photos' look; written by `python -m dit_translate.tiny
pairs`; the held-out photos ({", ".join(HELD_OUT)}) are the test pairs. {history}Loss: {target} MSE
+ {train["lambda_clip"]} x (1 - cos CLIP(decoded x0 estimate), CLIP(target)) for t < {train["aux_t_max"]}
(LPIPS weight {train["lambda_lpips"]}: its AlexNet weights cannot be downloaded here). AdamW lr
{train["lr"]} ({train["lr_schedule"]} schedule, {train["warmup_steps"]} warm-up steps), batch {train["batch_size"]},
EMA {train["ema_decay"]}, condition dropout {dit["cond_dropout"]}; trained {meta["step"]} steps in
{float(last.get("seconds", "nan")):.0f} s of optimizer time on one CPU thread (the VAE latents of the
pairs cached once, `[train] cache_latents`). Sampling: DDIM {meta["defaults"].get("steps")} steps,
CFG {meta["defaults"].get("guidance")}; the CLI and the app fit photos to
{meta["defaults"].get("size", meta["image_size"])} px (longer side).

![loss curves](loss_curve.png)

## Held-out evaluation ({len(sources)} pairs)
PSNR / SSIM to the comic filter's rendering of the held-out photos: the DiT, the untranslated
photo, and SDEdit on the tiny Stable Diffusion with the prompt "a comic drawing".

| output | PSNR (dB) | SSIM |
|---|---|---|
{rows}

{verdict} The tiny VAE bounds any latent model here: held-out comic renderings come back
through it at {ceiling:.2f} dB.

Rows of the comparison: photo, SDEdit, DiT, comic target.

![comparison](comparison.png)

## Limits
64 px, {len(PHOTOS) - len(HELD_OUT)} training photos, one synthetic comic style: it learns the
filter, blurrily, and nothing else.
"""
    (folder / "README.md").write_text(card)
    return folder / "README.md"


def _mean_scores(results: list, clip, text: str) -> dict[str, float]:
    """Mean SSIM to the source (``metrics["ssim_to_source"]``) and mean ``metrics.clip_text_score`` to ``text``
    under ``clip`` of some ``TranslationResult``s."""
    from dit_translate.metrics import clip_text_score

    images = torch.cat([r.image for r in results]).to(clip.device)
    return {"ssim": float(np.mean([r.metrics["ssim_to_source"] for r in results])),
            "clip": float(np.mean(clip_text_score(images, text, clip)))}


def _photo_images(store, preset: str) -> list[Image.Image]:
    """The held-out photos' centre crops at ``preset``'s working size."""
    return [Image.fromarray(img) for img in example_inputs(store.get(preset).preset.size).values()]


def editing_comparison(store=None, prompt: str = "a comic drawing", strengths: tuple[float, ...] = (0.5, 0.7),
                       seeds: tuple[int, ...] = (0, 1, 2), preset: str = "tiny") -> dict[str, dict[str, dict[str, float]]]:
    """SDEdit vs the released correction on the held-out photos (centre crops at the preset's working size,
    with its layer map), per strength: mean SSIM
    to the source and mean CLIP score to ``prompt`` under the preset's first guidance CLIP, over ``seeds``.

    Returns ``{"0.5": {"sdedit": {"ssim", "clip"}, "correct": {...}}, ...}``.
    """
    from dit_translate.api import EditRequest, edit
    from dit_translate.store import default_store

    store = store or default_store()
    clip = store.guidance(preset).clips()[0]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for strength in strengths:
        row = {}
        for method in ("sdedit", "correct"):
            results = [edit(EditRequest(method, prompt, strength=strength, seed=seed), photo, preset=preset, store=store)
                       for photo in _photo_images(store, preset) for seed in seeds]
            row[method] = _mean_scores(results, clip, prompt)
        out[f"{strength:g}"] = row
    return out


def agg_comparison(store=None, text: str = "a comic drawing", seeds: tuple[int, ...] = (0, 1, 2),
                   preset: str = "tiny") -> dict[str, dict[str, float]]:
    """Text-guided AGG vs unguided DDIM (same seed, same windows) on the held-out photos: mean SSIM to the
    source and mean CLIP score to ``text`` under the preset's first guidance CLIP. ``{"agg"|"ddim": {...}}``."""
    from dit_translate.api import GuideRequest, guide
    from dit_translate.store import default_store

    store = store or default_store()
    clip = store.guidance(preset).clips()[0]
    results = [guide(GuideRequest(text=text, seed=seed), photo, preset=preset, store=store)
               for photo in _photo_images(store, preset) for seed in seeds]
    return {"agg": _mean_scores(results, clip, text), "ddim": _mean_scores([r.extras["ddim"] for r in results], clip, text)}


EXAMPLE_COLUMNS = ("photo", "DiT (tiny-dit)", "SDEdit", "correction", "AGG")


def example_grid(examples: str | Path, out: str | Path, prompt: str = "a comic drawing", seed: int = 0,
                 store=None, tile: int = 192) -> Path:
    """What the app gives for its example photos (``examples/*.jpg``) with the default presets and knobs:
    one row per photo, columns ``EXAMPLE_COLUMNS`` (``prompt`` for the text-driven methods), each tile
    ``tile`` px wide with a caption row on top. Saved as a PNG at ``out``."""
    from dit_translate import images
    from dit_translate.api import EditRequest, GuideRequest, edit, guide, translate
    from dit_translate.store import default_store

    store = store or default_store()
    rows = []
    for path in sorted(Path(examples).glob("*.jpg")):
        photo = images.load_image(path)
        results = [translate(photo, store=store, seed=seed),
                   edit(EditRequest("sdedit", prompt, seed=seed), photo, store=store),
                   edit(EditRequest("correct", prompt, seed=seed), photo, store=store),
                   guide(GuideRequest(text=prompt, seed=seed), photo, store=store)]
        rows.append([photo] + [images.to_pil(r.image[0]) for r in results])
    height = round(tile * rows[0][0].height / rows[0][0].width)
    head = 20
    grid = Image.new("RGB", (tile * len(EXAMPLE_COLUMNS), head + height * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(EXAMPLE_COLUMNS):
        draw.text((j * tile + 4, 4), name, fill="black")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid.paste(img.resize((tile, height), Image.LANCZOS), (j * tile, head + i * height))
    grid.save(out)
    return Path(out)


def training_hours(root: str | Path) -> dict[str, float]:
    """Training seconds per stage of the shipped tiny world (read from the cards' ``eval.json``) and the
    two-core schedule's length under ``"two_cores"``: ``max(vae, clip)``, then the U-Net beside the DiT with the
    decoder fine-tune (which only needs the VAE) after whichever of the two makes the schedule shorter."""
    root = Path(root)
    sd, clip, dit = (json.loads((root / name / "eval.json").read_text()) for name in ("sd", "clip", "dit"))
    t = {"vae": float(sd["vae_last"]["seconds"]), "decoder": float(sd.get("decoder_last", {}).get("seconds", 0.0)),
         "unet": float(sd["sd_last"]["seconds"]), "clip": float(clip["last"]["seconds"]),
         "dit": float(dit["last"]["seconds"])}
    second = min(max(t["unet"] + t["decoder"], t["dit"]), max(t["unet"], t["dit"] + t["decoder"]))
    return {**t, "two_cores": max(t["vae"], t["clip"]) + second}


def write_world_card(root: str | Path = "assets/tiny") -> Path:
    """Measure every held-out quality figure of the tiny world and write ``root/README.md`` + ``root/eval.json``.

    Reads the shipped folders ``root/sd``, ``root/clip`` and ``root/dit`` through the presets, exactly
    as the app and the behaviour tests (tests/test_tiny_world.py) do.
    """
    import open_clip

    from dit_translate.encoders import ClipEncoder

    root = Path(root)
    vae = AutoencoderKL.from_pretrained(root / "sd" / "vae", use_safetensors=True).eval()
    psnr = vae_psnr(vae)
    name = f"local-dir:{root / 'clip'}"
    retrieval = style_retrieval(ClipEncoder.from_model(open_clip.create_model(name, weights_only=True), open_clip.get_tokenizer(name), name))
    sources, targets = heldout_pairs()
    dit, _, _ = dit_vs_sdedit(root / "dit", root / "sd", sources, targets)
    editing = editing_comparison()
    guided = agg_comparison()
    results = {"vae_psnr_db": psnr, "clip_style_retrieval": retrieval, "dit_vs_sdedit": dit,
               "sdedit_vs_correction": editing, "agg_vs_ddim": guided}
    (root / "eval.json").write_text(json.dumps(results, indent=2))
    example_grid(root.parent / "examples", root / "examples.png")
    mean_psnr = float(np.mean(list(psnr.values())))
    hours = training_hours(root)
    edit_rows = "\n".join(
        f"| {s} | {r['sdedit']['ssim']:.3f} | {r['correct']['ssim']:.3f} | {r['sdedit']['clip']:.3f} | {r['correct']['clip']:.3f} |"
        for s, r in editing.items())
    card = f"""# The tiny world

Small models this project trains itself on CPU (`python -m dit_translate.tiny build`), shipped here so
that every method of dit-translate runs offline with trained weights, through exactly the code path
of the real models. They are **toys** (64 px, 14 training photos, synthetic styles).

| folder | what | used by | card |
|---|---|---|---|
| `sd/` | Stable-Diffusion-layout pipeline (VAE, CLIP text encoder, U-Net, DDIM) | preset `tiny`: SDEdit, correction, PnP, AGG | [sd/README.md](sd/README.md) |
| `clip/` | open_clip model (local-dir layout) | AGG's losses, the DiT's conditioning, CLIP metrics | [clip/README.md](clip/README.md) |
| `dit/` | CLIP-conditioned paired DiT, photo -> comic | preset `tiny-dit`: paired translation | [dit/README.md](dit/README.md) |

## The app's example photos, default knobs

![examples](examples.png)

## Held-out quality (photos {", ".join(HELD_OUT)}, never trained on)
Measured by `python -m dit_translate.tiny report`; the behaviour tests (`tests/test_tiny_world.py`)
re-measure them with margins.

| check | target | measured |
|---|---|---|
| VAE reconstruction PSNR, mean over styles | >= 24 dB | {mean_psnr:.2f} dB ({", ".join(f"{k} {v:.1f}" for k, v in psnr.items())}) |
| CLIP image -> style caption, top-1 | >= 90% | {retrieval["style_only"]:.1%} (style-only captions), {retrieval["with_content"]:.1%} (with content words) |
| DiT vs comic target, PSNR | > photo, > SDEdit | DiT {dit["dit"]["psnr"]:.2f}, photo {dit["photo"]["psnr"]:.2f}, SDEdit {dit["sdedit"]["psnr"]:.2f} dB |
| DiT vs comic target, SSIM | > photo, > SDEdit | DiT {dit["dit"]["ssim"]:.3f}, photo {dit["photo"]["ssim"]:.3f}, SDEdit {dit["sdedit"]["ssim"]:.3f} |
| AGG "a comic drawing" vs unguided DDIM, CLIP score | higher | AGG {guided["agg"]["clip"]:.3f}, DDIM {guided["ddim"]["clip"]:.3f} |
| AGG SSIM to source | >= 0.4 | AGG {guided["agg"]["ssim"]:.3f}, DDIM {guided["ddim"]["ssim"]:.3f} |

SDEdit vs the semantic-discrepancy correction (released variant), prompt "a comic drawing", mean
over the held-out photos and 3 seeds (CLIP score: cosine to the prompt under the tiny CLIP):

| strength | SSIM to source, SDEdit | SSIM, correction | CLIP score, SDEdit | CLIP score, correction |
|---|---|---|---|---|
{edit_rows}

The correction injects at `up_blocks.2` here, one decoder block above the released `up_blocks.1`,
which sits at 4x4 in this U-Net (our choice; `presets/tiny.toml` gives the numbers of both maps).
{"The DiT meets its bar" if dit_bar_met(dit) else "The DiT does not yet meet its bar"} against the untranslated photo and SDEdit (see [dit/README.md](dit/README.md)).

## Training time
Optimizer seconds on one CPU thread per stage (from the cards' `eval.json`): VAE {hours["vae"]:.0f} s,
VAE decoder fine-tune {hours["decoder"]:.0f} s, U-Net + text encoder {hours["unet"]:.0f} s, CLIP
{hours["clip"]:.0f} s, DiT {hours["dit"]:.0f} s. On two cores (the CLIP alongside the VAE, then the U-Net
alongside the DiT, which needs the VAE's encoder and the CLIP, and the decoder fine-tune after the shorter
of those two chains) that is
**{hours["two_cores"] / 3600:.2f} h** of training.
"""
    (root / "README.md").write_text(card)
    return root / "README.md"


def _mean_column(path: Path, column: str) -> float:
    """Mean of one column of a training ``loss.csv``."""
    return float(np.mean(read_curve(path, column)[1]))


def write_dino_card(folder: str | Path, work: str | Path) -> Path:
    """Measure the exported tiny DINO ``folder`` (``dino_eval.measure``) against the untrained ViTs and write
    its ``README.md``, ``eval.json``, ``loss_curve.png`` and ``agg_examples.png``."""
    from dit_translate.tiny.dino_eval import RETRIEVAL_CROPS, measure

    folder, work = Path(folder), Path(work)
    results, grid = measure(folder)
    config = json.loads((folder / "config.json").read_text())
    cfg, extra = json.loads((work / "train_config.json").read_text()), config["dit_translate"]
    arch = cfg["model"]
    last = _csv_tail(work / "loss.csv")
    sps = _mean_column(work / "loss.csv", "samples_per_s")
    (folder / "eval.json").write_text(json.dumps({**results, "last": last, "mean_samples_per_s": sps, **extra}, indent=2))
    plot_curves({"DINO loss": read_curve(work / "loss.csv"),
                 "teacher entropy": read_curve(work / "loss.csv", "teacher_entropy")}, folder / "loss_curve.png")
    _tile_grid(grid).save(folder / "agg_examples.png")
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(folder / "model.safetensors").values())
    retrieval_rows = "\n".join(
        f"| {name} | {r['plain']['held_out']:.1%} | {r['plain']['train']:.1%} | {r['jittered']['held_out']:.1%} | "
        f"{r['jittered']['train']:.1%} |" for name, r in results["retrieval_top1"].items())
    structure_rows = "\n".join(f"| {name} | {r['same']:.3f} | {r['other']:.3f} | {r['contrast']:.3f} | {r['distance']:.4f} |"
                               for name, r in results["key_structure"].items())
    agg_rows = "\n".join(
        f"| {photo} | {name} | {r['dino_cls_to_style']:.3f} | {r['clip_to_style']:.3f} | {r['structure_distance']:.4f} | "
        f"{r['ssim_to_source']:.3f} |" for photo, rows in results["agg_image_guided"].items() for name, r in rows.items())
    names = list(next(iter(results["agg_image_guided"].values())))
    card = f"""---
license: cc0-1.0
library_name: timm
tags: [dino, vit, self-supervised, toy, tiny]
---
# dit-translate tiny DINO ViT (toy world)

A timm `VisionTransformer` (`vit_tiny_patch16_224` resized: {arch["img_size"]} px, patch {arch["patch_size"]},
width {arch["embed_dim"]}, {arch["depth"]} blocks, {arch["num_heads"]} heads; {params / 1e6:.2f} M params, backbone
only) trained from scratch on CPU by self-distillation (DINO, Caron et al. 2021) with
`python -m dit_translate.tiny build --stages dino`, in timm's `local-dir` layout. It is the DINO of the
tiny world: image-guided AGG (`guide --style-image`) compares its [CLS] token (after the final norm,
`encoders.DinoEncoder.cls_token`) of the result with the style image's.

## Data and recipe
Views of the {len(PHOTOS) - len(HELD_OUT)} training photos (short side resized to {cfg["photo_side"]} px; never
{", ".join(HELD_OUT)}) and of {cfg["synthetic"]} dead-leaves images ({cfg["synthetic_size"]} px, `tiny.data.dead_leaves`;
a sample is one of those with probability {cfg["synthetic_p"]}). Multi-crop: 2 global views ({cfg["global_size"]} px,
area {cfg["global_scale"][0]}-{cfg["global_scale"][1]}) and {cfg["local_crops"]} local views ({cfg["local_size"]} px, area
{cfg["local_scale"][0]}-{cfg["local_scale"][1]}), with DINO's flips, colour jitter, greyscale, blur and solarisation
(`tiny.multicrop`). Student and teacher: the ViT plus DINO's head (MLP {cfg["hidden_dim"]}-{cfg["hidden_dim"]}-{cfg["bottleneck_dim"]},
l2-normalised, weight-normalised last layer to {cfg["out_dim"]} prototypes). Loss: cross-entropy of the teacher's
centred (centre momentum {cfg["center_momentum"]}) and sharpened softmax (temperature {cfg["teacher_temp_start"]} ->
{cfg["teacher_temp"]} over the first {cfg["teacher_temp_warmup"]:.0%} of the steps) against the student's (temperature
{cfg["student_temp"]}), over every pair of a teacher global view and another student view. Teacher: EMA of the
student, momentum {cfg["momentum"]} -> 1 (cosine). AdamW lr {cfg["lr"]} ({cfg["warmup"]} warm-up steps, linear decay
to 10% over the second half), weight decay {cfg["weight_decay"]}, batch {cfg["batch_size"]}; {last.get("step", "?")} steps in
{float(last.get("seconds", "nan")):.0f} s of optimizer time on one CPU thread ({sps:.1f} samples/s). Shipped: the
teacher's backbone at step {extra["training_step"]} (no head).

![loss curve](loss_curve.png)

Last logged (mean of the last {cfg["log_every"]} steps): loss {last.get("loss", "?")}, teacher entropy
{last.get("teacher_entropy", "?")} nats, entropy of the batch-mean teacher distribution {last.get("batch_entropy", "?")}
nats (log {cfg["out_dim"]} = {math.log(cfg["out_dim"]):.2f}; both near 0 or both near log K would mean collapse).

## Evaluation
Untrained baselines: the preset's random fallback (`encoders.TINY_DINO_ARGS`, what image-guided AGG on the
tiny preset used before this model shipped) and a random init of this architecture.

**Crop retrieval.** {len(PHOTOS)} photos x {RETRIEVAL_CROPS} new random crops (30-100% of the short side, flips; 64 px): is the
nearest other crop (cosine of the [CLS] feature) a crop of the same photo? Top-1 over the held-out photos' crops
and over the training photos' crops; "jittered": every crop first gets DINO's colour jitter and greyscale. The
trivial baselines are centred mean colour and a centred 4x4 thumbnail.

| features | held-out, plain | training, plain | held-out, jittered | training, jittered |
|---|---|---|---|---|
{retrieval_rows}

**Key self-similarity structure** (held-out crops): the cosine self-similarity matrix of the last block's keys
(patch tokens), correlated with the matrix of a mildly altered copy (weak colour jitter, slight blur, noise;
`same`) and with another crop's (`other`); `contrast` = same - other; `distance`: AGG's structure distance (MSE
of the matrices) to the altered copy. "patch pixels": the same on raw 8x8 patches.

| descriptor | same | other | contrast | distance |
|---|---|---|---|---|
{structure_rows}

**Image-guided AGG, held-out.** `api.guide` with the style image ({results["style_image"]}) on
`assets/examples/{{{",".join(HELD_OUT)}}}.jpg`, {results["agg_steps"]} steps, seeds {results["agg_seeds"]}, the tiny preset with its DINO
swapped; the DDIM row is the unguided baseline of the same seeds. Judges: cosine to the style image of this
model's [CLS] and of the tiny CLIP's image embedding (higher = closer to the style), this model's key structure
distance to the source and SSIM to the source (lower distance / higher SSIM = structure kept).

| photo | run | DINO [CLS] cos to style | CLIP cos to style | structure distance | SSIM to source |
|---|---|---|---|---|---|
{agg_rows}

Columns: source, style image, DDIM, then AGG with {", ".join(names[1:])} (seed {results["agg_seeds"][0]}).

![AGG examples](agg_examples.png)

## Limits
{len(PHOTOS) - len(HELD_OUT)} photos and synthetic shapes, 64 px, a few thousand steps: its features tell apart the textures and
colour layouts of this small world, not objects; it is no substitute for DINO ViT-B/8 when judging real images.
"""
    (folder / "README.md").write_text(card)
    return folder / "README.md"
