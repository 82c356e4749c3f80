"""Training pairs encoded by the frozen VAE once, instead of at every step (fast-DiT's pre-extracted features).

Encoding source and target costs a tiny DiT about as much as its own forward and backward pass. When
the data augmentation is only a mirror image (``PairedDataset.fixed_crop``), every latent a run can
need is one of ``2 x len(dataset)``: the cache holds the scaled posterior mean and std of both
images of every pair, mirrored and not, and the training step draws each sample's posterior sample from
them (``paired.train``). Memory: ``2 x 3 x C x h x w`` floats per
pair (25 KB for the tiny world's 4 x 16 x 16 latents, 98 KB for SD's at 256 px); kept on the CPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from dit_translate.diffusion.codec import LatentCodec
from dit_translate.paired.data import PairedDataset


@dataclass
class LatentCache:
    """``target_mean``/``target_std``/``source_mean``: (N, 2, C, h, w) float32, index 1 = mirrored."""

    target_mean: torch.Tensor
    target_std: torch.Tensor
    source_mean: torch.Tensor

    @classmethod
    @torch.no_grad()
    def build(cls, dataset: PairedDataset, codec: LatentCodec, device: torch.device, batch_size: int = 32,
              progress: bool = True) -> LatentCache:
        """Encode every readable pair of ``dataset`` (unreadable ones stay zero: the dataset never serves them)."""
        if not dataset.fixed_crop:
            raise ValueError("latents can be cached only when items differ by a mirror image at most "
                             "(load_size > size means random crops)")
        n, entries = len(dataset), None
        batches = range(0, n, batch_size)
        for first in tqdm(batches, desc="caching latents", disable=not progress, dynamic_ncols=True,
                          mininterval=1.0 if sys.stderr.isatty() else 30.0):
            items = [(i, dataset.unaugmented(i)) for i in range(first, min(first + batch_size, n))]
            items = [(i, it) for i, it in items if it is not None]
            if not items:
                continue
            index = torch.tensor([i for i, _ in items])
            images = torch.stack([torch.stack([it["source"], it["target"]]) for _, it in items])  # (b, 2, 3, H, W)
            images = torch.stack([images, images.flip(-1)], dim=1).flatten(0, 2).to(device)  # (b*2*2, 3, H, W)
            mean, std = (m.float().cpu().unflatten(0, (len(items), 2, 2)) for m in codec.moments(images))
            if entries is None:
                entries = [torch.zeros(n, 2, *mean.shape[-3:]) for _ in range(3)]
            entries[0][index], entries[1][index], entries[2][index] = mean[:, :, 1], std[:, :, 1], mean[:, :, 0]
        if entries is None:
            raise ValueError("no pair of the dataset could be read")
        return cls(*entries)

    def moments(self, index: torch.Tensor, flip: torch.Tensor, device: torch.device,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(target posterior mean, its std, source latents at the posterior mode), each (B, C, h, w), for items
        with these ``index`` and ``flip`` values (from the batch)."""
        index, flip = index.cpu().long(), flip.cpu().long()
        mean, std = (t[index, flip].to(device, dtype) for t in (self.target_mean, self.target_std))
        return mean, std, self.source_mean[index, flip].to(device, dtype)
