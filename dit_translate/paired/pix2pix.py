"""The pix2pix baseline (Isola et al. 2017): a U-Net generator and a 70x70 PatchGAN, trained with
a conditional GAN loss plus 100 x L1, Adam lr 2e-4, beta1 0.5.

Written from the paper's description. One deliberate difference: instance norm instead of batch norm,
which is what pix2pix's batch-size-1 training amounts to, but independent of the batch size.
Images are (B, 3, H, W) in [-1, 1]; the generator needs H and W divisible by ``2 ** num_downs``.

The colouriser (``ColorizationRecipe``, data layout ``colorization``) is the same generator and critic on
CIELAB channels, as in the pix2pix repository's colourisation model: 1 channel in (L / 50 - 1), 2 out
(ab / 110), the critic on (L, ab); ``colorize_ab`` runs it, ``colour.recombine`` makes the image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from dit_translate.colour import luminance, recombine, scale_l, unscale_ab
from dit_translate.paired.config import Pix2PixSpec, TrainSpec
from dit_translate.paired.recipe import Batch, Recipe


def _down(cin: int, cout: int, norm: bool) -> nn.Sequential:
    """Encoder block C_k: LeakyReLU(0.2) -> 4x4 stride-2 conv -> (instance norm)."""
    layers = [nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    return nn.Sequential(*layers, *([nn.InstanceNorm2d(cout, affine=True)] if norm else []))


def _up(cin: int, cout: int, dropout: bool) -> nn.Sequential:
    """Decoder block CD_k: ReLU -> 4x4 stride-2 transposed conv -> instance norm -> (dropout 0.5)."""
    layers = [nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.InstanceNorm2d(cout, affine=True)]
    return nn.Sequential(*layers, *([nn.Dropout(0.5)] if dropout else []))


class UNetGenerator(ModelMixin, ConfigMixin):
    """pix2pix's U-Net: ``num_downs`` stride-2 encoder blocks (widths ngf * (1, 2, 4, 8, 8, ...)) and a
    mirrored decoder with skip connections; dropout in the first three decoder blocks of width 8 * ngf
    (the paper's CD512-CD512-CD512-C512-C256-C128-C64 at 256 px)."""

    @register_to_config
    def __init__(self, num_downs: int = 8, ngf: int = 64, in_channels: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        widths = [ngf * min(2**i, 8) for i in range(num_downs)]
        self.first = nn.Conv2d(in_channels, widths[0], 4, 2, 1)
        self.downs = nn.ModuleList(
            _down(widths[i - 1], widths[i], norm=i < num_downs - 1) for i in range(1, num_downs))
        self.ups = nn.ModuleList()
        for i in range(num_downs - 1, 0, -1):
            cin = widths[i] if i == num_downs - 1 else 2 * widths[i]
            self.ups.append(_up(cin, widths[i - 1], dropout=i >= num_downs - 3 and widths[i - 1] == 8 * ngf))
        self.last = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], out_channels, 4, 2, 1), nn.Tanh())

    @classmethod
    def for_size(cls, image_size: int, ngf: int = 64, in_channels: int = 3, out_channels: int = 3) -> UNetGenerator:
        """A generator whose bottleneck is 1x1 at ``image_size`` (8 levels at 256 px), at least 2 levels."""
        return cls(num_downs=max(2, int(math.log2(image_size))), ngf=ngf, in_channels=in_channels,
                   out_channels=out_channels)

    @property
    def is_colorizer(self) -> bool:
        """Whether this is the L -> ab colouriser (1 channel in, 2 out)."""
        return self.config.in_channels == 1 and self.config.out_channels == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.first(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        for up in self.ups:
            h = torch.cat([up(h), skips.pop()], dim=1)
        return self.last(h)


class PatchDiscriminator(nn.Module):
    """PatchGAN on (source, image) pairs: C64-C128-C256-C512 (stride 1) and a 1-channel 4x4 conv; with
    ``n_layers=3`` each output logit sees a 70x70 receptive field."""

    def __init__(self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.InstanceNorm2d(out, affine=True),
                       nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, source: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([source, image], dim=1))


def _gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def _init_normal(module: nn.Module) -> None:
    """pix2pix's initialisation: N(0, 0.02) convolutions, N(1, 0.02) norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.InstanceNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Pix2PixRecipe(Recipe):
    """One pix2pix step: the discriminator on real and generated pairs, then the generator on
    GAN + ``l1_weight`` * L1, each with its own Adam (lr, beta1 from ``[pix2pix]``)."""

    in_channels, out_channels = 3, 3

    def __init__(self, accelerator: Accelerator, train: TrainSpec, spec: Pix2PixSpec, image_size: int) -> None:
        super().__init__(accelerator, train)
        self.spec = spec
        generator = UNetGenerator.for_size(image_size, spec.ngf, self.in_channels, self.out_channels)
        critic = PatchDiscriminator(self.in_channels + self.out_channels, ndf=spec.ndf, n_layers=spec.n_layers_d)
        _init_normal(generator)
        _init_normal(critic)
        opts = [torch.optim.Adam(m.parameters(), lr=spec.lr, betas=(spec.beta1, 0.999)) for m in (generator, critic)]
        generator, critic, *opts = accelerator.prepare(generator, critic, *opts)
        self.modules = {"generator": generator, "critic": critic}
        self.optimizers = dict(zip(self.modules, opts))
        self.lr_schedulers = {k: self.make_lr_scheduler(o) for k, o in self.optimizers.items()}

    def net(self) -> UNetGenerator:
        return self.unwrap("generator")

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(network input, network target) of a batch: the source and target images."""
        return batch["source"], batch["target"]

    def update(self, batches: list[Batch], generator: torch.Generator) -> dict[str, float]:
        g, d = self.modules["generator"], self.modules["critic"]
        g.train()
        d.train()
        fakes: dict[int, torch.Tensor] = {}

        def critic_loss(batch: Batch) -> dict[str, torch.Tensor]:
            source, target = self.inputs(batch)
            fake = g(source)
            fakes[id(batch)] = fake
            loss = 0.5 * (_gan_loss(d(source, target), True)
                          + _gan_loss(d(source, fake.detach()), False))
            return {"loss": loss}

        def generator_loss(batch: Batch) -> dict[str, torch.Tensor]:
            source, target = self.inputs(batch)
            fake = fakes.pop(id(batch))
            gan = _gan_loss(d(source, fake), True)
            l1 = F.l1_loss(fake, target)
            return {"loss": gan + self.spec.l1_weight * l1, "gan": gan, "l1": l1}

        logs = {"loss_d": self.accumulate("critic", batches, critic_loss)["loss"]}
        self.step("critic")
        logs.update(self.accumulate("generator", batches, generator_loss))
        self.step("generator")
        self.optimizers["critic"].zero_grad(set_to_none=True)  # the generator loss also reached the critic
        return logs

    @torch.no_grad()
    def sample(self, sources: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
        """Generated targets for ``sources`` (eval mode: no dropout, so deterministic)."""
        net = self.net().eval()
        return net(sources).clamp(-1, 1)


class ColorizationRecipe(Pix2PixRecipe):
    """pix2pix as the L -> ab colouriser: the generator maps scaled L to scaled ab, the critic judges
    (L, ab), the L1 term is on ab (data layout ``colorization``, whose items carry "lab")."""

    in_channels, out_channels = 1, 2

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["lab"][:, :1], batch["lab"][:, 1:]

    @torch.no_grad()
    def sample(self, sources: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
        """Colourised ``sources`` (B, 3, H, W) in [-1, 1] (their L kept): RGB in [-1, 1]."""
        return colorize_batch(self.net().eval(), sources)


def _rgb01(images: torch.Tensor) -> list[np.ndarray]:
    return [((x.detach().double().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy() for x in images]


@torch.no_grad()
def colorize_ab(net: UNetGenerator, L: np.ndarray) -> np.ndarray:
    """CIELAB ab (H x W x 2) the colouriser predicts for the CIELAB L channel ``L`` (H x W, 0..100).

    Sides that are not multiples of ``2 ** num_downs`` are padded (reflected where possible) and the
    padding cropped off the prediction.
    """
    p = next(net.parameters())
    m = 2**net.config.num_downs
    h, w = L.shape
    x = torch.from_numpy(scale_l(L)).to(p.device, p.dtype)[None, None]
    ph, pw = -h % m, -w % m
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    ab = net(x)[0, :, :h, :w].float().clamp(-1, 1)
    return unscale_ab(ab.permute(1, 2, 0).double().cpu().numpy())


def colorize_batch(net: UNetGenerator, sources: torch.Tensor) -> torch.Tensor:
    """Colourise (B, 3, H, W) images in [-1, 1] (grey or colour: only their L is used) -> RGB in [-1, 1]
    with each image's L kept (``colour.recombine``)."""
    out = []
    for rgb in _rgb01(sources):
        ab = colorize_ab(net, luminance(rgb))
        out.append(torch.from_numpy(recombine(rgb, ab)).permute(2, 0, 1).float() * 2 - 1)
    return torch.stack(out).to(sources.device)
