"""Data held on the training device as uint8, sampled in a seeded, resumable order.

The whole split is one uint8 tensor on the device (CIFAR-100 train is 150 MB). A batch is an
index gather plus a few tensor ops, so there are no DataLoader workers, no per-image PIL calls
and no host-to-device copies in the training path. uint8 is 4x smaller than float32 and the
conversion is fused into normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 NCHW array (chunked to bound memory)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch ``epoch``: a pure function of (seed, epoch), so resuming mid-epoch
    needs only the step counter, not a saved sampler state."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float32, scaled to [0, 1] and standardised in one pass."""
    return (images.float() * (1.0 / 255.0) - mean) / std


def prepare_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: int | None = None, channels_last: bool = False) -> torch.Tensor:
    """uint8 NCHW on the device -> the model's input: normalised, resized to ``size`` when it
    differs (antialiased when shrinking), optionally in channels_last memory format."""
    x = normalize(images, mean, std)
    if size and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def stats_tensors(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m, s


def iterate_eval(images: torch.Tensor, batch_size: int):
    """Consecutive slices of a device array (evaluation: no shuffling, no dropping)."""
    for i in range(0, len(images), batch_size):
        yield slice(i, min(i + batch_size, len(images)))
