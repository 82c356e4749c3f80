"""Stage ``dino``: train the tiny world's DINO ViT by self-distillation with multi-crop (Caron et al. 2021).

A student and a teacher share one architecture: a timm ``VisionTransformer`` (``vit_tiny_patch16_224``
resized, as ``encoders.TINY_DINO_ARGS``) and DINO's projection head (3-layer MLP, l2-normalised
bottleneck, weight-normalised last layer with its norm fixed to 1). The student sees two global and
``local_crops`` local views of each image (``tiny.multicrop``); the teacher only the global ones. The loss
is the cross-entropy between the teacher's centred, sharpened softmax (temperature warming up from
``teacher_temp_start`` to ``teacher_temp``) and the student's softmax (temperature ``student_temp``),
over every (teacher global view, other student view) pair. The teacher is an exponential moving
average of the student, momentum on a cosine schedule from ``momentum`` to 1, and its centre an EMA
(``center_momentum``) of its batch-mean outputs. Only the teacher's backbone ships, in timm's
``local-dir`` layout, so ``encoders.load_dino`` loads it as it loads a hub DINO.

Data: the training photos (never the held-out ones) and ``dead_leaves`` images. The loop is
``tiny.loop.TrainLoop`` (no loop EMA: the teacher is DINO's own); every random draw of a step comes
from the loop's per-step generator, so a killed run resumes exactly.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dit_translate.encoders import IMAGENET_MEAN, IMAGENET_STD, normalize
from dit_translate.paired.config import check_fields
from dit_translate.tiny.checkpoint import CHECKPOINT_NAME, load_weights
from dit_translate.tiny.loop import TrainLoop
from dit_translate.tiny.multicrop import MultiCrop, leaves_sources, photo_sources

ARCH = "vit_tiny_patch16_224"
DINO_MODEL = {"img_size": 64, "patch_size": 8, "embed_dim": 96, "depth": 4, "num_heads": 3, "num_classes": 0}
"""The shipped tiny DINO backbone (0.47 M parameters, 1.9 MB): ``TINY_DINO_ARGS``' family, wider and deeper."""


_DINO_RANGES = {"dino.steps": (1, 10**9), "dino.batch_size": (1, 65_536), "dino.lr": (1e-8, 1.0),
                "dino.warmup": (0, 10**9), "dino.weight_decay": (0.0, 1.0), "dino.global_size": (8, 1024),
                "dino.local_size": (8, 1024), "dino.local_crops": (0, 64), "dino.synthetic": (0, 10**6),
                "dino.synthetic_p": (0.0, 1.0), "dino.student_temp": (1e-4, 10.0), "dino.teacher_temp": (1e-4, 10.0),
                "dino.teacher_temp_start": (1e-4, 10.0), "dino.teacher_temp_warmup": (0.0, 1.0),
                "dino.momentum": (0.0, 1.0), "dino.center_momentum": (0.0, 1.0), "dino.save_every": (1, 10**9),
                "dino.log_every": (1, 10**9)}
"""Bounds of the ``DINOTrainConfig`` fields (``paired.config.check_fields``)."""


@dataclass(frozen=True)
class DINOTrainConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 5e-4
    warmup: int = 300
    weight_decay: float = 0.04
    global_size: int = 64
    local_size: int = 32
    local_crops: int = 6
    global_scale: tuple[float, float] = (0.35, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.35)
    photo_side: int = 160
    synthetic: int = 1024
    synthetic_size: int = 96
    synthetic_p: float = 0.5
    out_dim: int = 1024
    hidden_dim: int = 256
    bottleneck_dim: int = 64
    student_temp: float = 0.1
    teacher_temp_start: float = 0.04
    teacher_temp: float = 0.06
    teacher_temp_warmup: float = 0.3
    momentum: float = 0.995
    center_momentum: float = 0.9
    seed: int = 0
    save_every: int = 200
    log_every: int = 25
    model: dict = field(default_factory=lambda: dict(DINO_MODEL))

    def __post_init__(self) -> None:
        check_fields(self, "dino", _DINO_RANGES)


# ---- schedules -------------------------------------------------------------------------------------
def teacher_momentum(step: int, steps: int, base: float) -> float:
    """DINO's cosine momentum schedule: ``1 - (1 - base) (cos(pi step / steps) + 1) / 2``, ``base`` -> 1."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(1, steps)) + 1) / 2


def teacher_temperature(step: int, steps: int, start: float, end: float, warmup: float) -> float:
    """Linear warm-up from ``start`` to ``end`` over the first ``warmup`` fraction of ``steps``, then ``end``."""
    n = round(warmup * steps)
    return end if step >= n else start + (end - start) * step / n


# ---- model -----------------------------------------------------------------------------------------
def make_backbone(model_args: dict, dynamic: bool = True) -> torch.nn.Module:
    """A random-init timm ViT of ``model_args``; ``dynamic`` lets it take the smaller local crops too
    (the positional embedding is resampled; at ``img_size`` the weights and outputs are unchanged)."""
    import timm

    return timm.create_model(ARCH, pretrained=False, dynamic_img_size=dynamic, **model_args)


class DINOHead(torch.nn.Module):
    """Linear-GELU-Linear-GELU-Linear to ``bottleneck``, l2-normalise, then a cosine layer to ``out_dim`` logits."""

    def __init__(self, dim: int, out_dim: int, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.GELU(), torch.nn.Linear(hidden, bottleneck))
        for m in self.mlp:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.trunc_normal_(m.weight, std=0.02)
                torch.nn.init.zeros_(m.bias)
        self.last = torch.nn.Parameter(torch.empty(out_dim, bottleneck))
        torch.nn.init.kaiming_uniform_(self.last, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, dim) -> (N, out_dim), each logit a cosine in [-1, 1]."""
        z = F.normalize(self.mlp(x), dim=-1)
        return F.linear(z, F.normalize(self.last, dim=-1))


class Branch(torch.nn.Module):
    """Backbone + head. Images in [-1, 1] are normalised as ``encoders.DinoEncoder`` does."""

    def __init__(self, backbone: torch.nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, *views: torch.Tensor) -> torch.Tensor:
        """Batches of views (each (N_i, 3, S_i, S_i), sizes may differ) -> concatenated logits (sum N_i, out_dim)."""
        cls = [self.backbone(normalize(v, IMAGENET_MEAN, IMAGENET_STD)) for v in views if len(v)]
        return self.head(torch.cat(cls))


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float,
              teacher_temp: float, n_global: int = 2) -> torch.Tensor:
    """DINO's loss: mean over pairs (teacher view i, student view v != i) of ``H(q_i, p_v)``.

    ``student`` (V*B, K) logits of V views ordered by view; ``teacher`` (n_global*B, K) of the global
    views, same order; ``center`` (K,). ``q = softmax((teacher - center) / teacher_temp)``,
    ``log p = log_softmax(student / student_temp)``; H is averaged over the batch.
    """
    q = F.softmax((teacher - center) / teacher_temp, dim=-1).chunk(n_global)
    log_p = F.log_softmax(student / student_temp, dim=-1).chunk(student.shape[0] // q[0].shape[0])
    terms = [-(qi * lp).sum(-1).mean() for i, qi in enumerate(q) for v, lp in enumerate(log_p) if v != i]
    return torch.stack(terms).mean()


class SelfDistillation(torch.nn.Module):
    """Student and EMA teacher (same architecture; the teacher gets no gradient) and the teacher's centre.

    ``forward`` returns ``{"loss", "teacher_entropy", "batch_entropy"}``: the DINO loss, the mean entropy
    of the teacher's distributions (sharpening; 0 = one-hot) and the entropy of their batch mean (a
    uniform collapse drives both to log K, a one-mode collapse both to 0).
    """

    def __init__(self, cfg: DINOTrainConfig) -> None:
        super().__init__()
        backbone = make_backbone(cfg.model)
        head = DINOHead(backbone.num_features, cfg.out_dim, cfg.hidden_dim, cfg.bottleneck_dim)
        self.student = Branch(backbone, head)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.register_buffer("center", torch.zeros(cfg.out_dim))
        self.student_temp, self.center_momentum = cfg.student_temp, cfg.center_momentum

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``teacher = momentum * teacher + (1 - momentum) * student``, parameter by parameter."""
        for t, s in zip(self.teacher.parameters(), self.student.parameters()):
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)

    def forward(self, globals_: torch.Tensor, locals_: torch.Tensor, teacher_temp: float) -> dict[str, torch.Tensor]:
        """globals_ (2B, 3, G, G), locals_ (L*B, 3, S, S), in [-1, 1]; updates the centre in training mode."""
        with torch.no_grad():
            self.teacher.eval()
            t = self.teacher(globals_)
        s = self.student(globals_, locals_)
        loss = dino_loss(s, t, self.center, self.student_temp, teacher_temp)
        with torch.no_grad():
            q = F.softmax((t - self.center) / teacher_temp, dim=-1)
            entropy = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()
            mean_q = q.mean(0)
            batch_entropy = -(mean_q * mean_q.clamp_min(1e-12).log()).sum()
            if self.training:
                self.center.mul_(self.center_momentum).add_(t.mean(0), alpha=1 - self.center_momentum)
        return {"loss": loss, "teacher_entropy": entropy, "batch_entropy": batch_entropy}


# ---- training --------------------------------------------------------------------------------------
def training_views(cfg: DINOTrainConfig) -> MultiCrop:
    """The multi-crop sampler over the training photos and ``cfg.synthetic`` dead-leaves images."""
    leaves = leaves_sources(cfg.synthetic, cfg.synthetic_size, cfg.seed + 1) if cfg.synthetic else []
    return MultiCrop(photo_sources(cfg.photo_side), leaves, cfg.global_size, cfg.local_size, cfg.local_crops,
                     cfg.global_scale, cfg.local_scale, cfg.synthetic_p)


def make_optimizer(module: SelfDistillation, cfg: DINOTrainConfig) -> torch.optim.AdamW:
    """AdamW over the student: weight decay on matrices, none on biases, norms and tokens."""
    decay, no_decay = [], []
    for p in module.student.parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def train_dino(work: str | Path, cfg: DINOTrainConfig, views: MultiCrop | None = None) -> SelfDistillation:
    """Train (or resume) up to ``cfg.steps``; state in ``<work>/checkpoint.safetensors``. Returns the module.

    The teacher update of step k (after the student's optimizer step k) runs at the start of step k + 1,
    where the loop hands control back; ``finish_teacher`` applies the last one (export does).
    """
    views = views or training_views(cfg)
    torch.manual_seed(cfg.seed)
    module = SelfDistillation(cfg)
    loop = TrainLoop(work, module, make_optimizer(module, cfg), cfg.steps, cfg.lr, cfg.warmup, cfg.seed,
                     cfg.save_every, cfg.log_every, config=asdict(cfg), desc="dino", batch_size=cfg.batch_size,
                     decay_from=0.5)
    device = loop.accelerator.device

    def step_fn(model: torch.nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
        if loop.step > 0:
            module.update_teacher(teacher_momentum(loop.step - 1, cfg.steps, cfg.momentum))
        globals_, locals_ = views(cfg.batch_size, g)
        temp = teacher_temperature(loop.step, cfg.steps, cfg.teacher_temp_start, cfg.teacher_temp,
                                   cfg.teacher_temp_warmup)
        return model(globals_.to(device), locals_.to(device), temp)

    loop.run(step_fn)
    return module


def finish_teacher(module: SelfDistillation, step: int, cfg: DINOTrainConfig) -> None:
    """Apply the teacher update still pending after ``step`` optimizer steps (none at step 0)."""
    if step > 0:
        module.update_teacher(teacher_momentum(step - 1, cfg.steps, cfg.momentum))


def read_config(work: str | Path) -> DINOTrainConfig:
    """The config a run in ``work`` was started with (``train_config.json``)."""
    raw = json.loads((Path(work) / "train_config.json").read_text())
    tuples = {k: tuple(v) for k, v in raw.items() if isinstance(v, list)}
    return DINOTrainConfig(**{**raw, **tuples})


def load_teacher(work: str | Path) -> tuple[torch.nn.Module, int, DINOTrainConfig]:
    """The teacher backbone of the latest checkpoint in ``work`` (its pending update applied), its step, the config."""
    cfg = read_config(work)
    module = SelfDistillation(cfg)
    step = load_weights(Path(work) / CHECKPOINT_NAME, module, ema=False)
    finish_teacher(module, step, cfg)
    return module.teacher.backbone.eval(), step, cfg


def export_dino(work: str | Path, out: str | Path) -> Path:
    """Write the teacher backbone of ``work``'s latest checkpoint to ``out`` in timm's ``local-dir`` layout
    (``config.json`` with DINO's preprocessing in ``pretrained_cfg``, ``model.safetensors``; no head)."""
    from timm.models import save_for_hf

    from dit_translate.files import replaced_folder

    backbone, step, cfg = load_teacher(work)
    plain = make_backbone(cfg.model, dynamic=False)
    plain.load_state_dict(backbone.state_dict())
    size = cfg.model["img_size"]
    pretrained = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input_size": [3, size, size],
                  "tag": "dit-translate-tiny-dino", "license": "cc0-1.0"}
    extra = {"training_step": step, "weights": "teacher"}
    with replaced_folder(Path(out)) as tmp:
        save_for_hf(plain, str(tmp), model_config={"pretrained_cfg": pretrained, "dit_translate": extra},
                    model_args=cfg.model, safe_serialization=True)
    return Path(out)
