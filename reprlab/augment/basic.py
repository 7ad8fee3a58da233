"""The standard CIFAR training augmentation, batched on the device: pad-and-crop and flip.

Each sample gets its own crop offset and flip decision; both are one gather/where over the
batch. Padding is done per batch (not on the stored dataset) so the stored array stays 32x32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random ``H x W`` crop of each zero-padded image (per-sample offsets), any dtype."""
    if padding <= 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=images.device)
    rows = (off[0][:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = (off[1][:, None] + torch.arange(w, device=images.device))[:, None, None, :]
    bi = torch.arange(b, device=images.device)[:, None, None, None]
    ci = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator, prob: float = 0.5) -> torch.Tensor:
    """Horizontal flip of each sample with probability ``prob``."""
    mask = torch.rand(images.shape[0], generator=generator, device=images.device) < prob
    return torch.where(mask[:, None, None, None], images.flip(3), images)
