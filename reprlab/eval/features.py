"""Feature extraction from a frozen backbone: eval mode, no gradients, batched on the device."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from reprlab import distributed
from reprlab.data.device import iterate_eval, prepare_batch


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images_u8: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    batch_size: int,
    device: torch.device,
    resolution: int | None = None,
    channels_last: bool = True,
    amp_dtype: torch.dtype | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Pooled features (N, D) float32 of a uint8 array; images are resized on the device to
    ``resolution`` when it differs from theirs (e.g. 32 px CIFAR fed at 224 px to an ImageNet
    backbone). The model's train/eval mode is restored afterwards. ``on_batch(n)`` is called
    after each batch of ``n`` images (a progress bar's ``update``).

    Under data parallelism every rank extracts its share and every rank returns all features,
    in order: call it on every rank."""
    n = len(images_u8)
    images_u8 = images_u8[distributed.shard(n)]
    was_training = model.training
    model.eval()
    out = []
    for sl in iterate_eval(images_u8, batch_size):
        x = prepare_batch(images_u8[sl].to(device, non_blocking=True), mean, std, resolution, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            out.append(model(x).float())
        if on_batch is not None:
            on_batch(len(x))
    model.train(was_training)
    feats = torch.cat(out) if out else torch.zeros(0)
    return distributed.gather_rows(feats, n)  # the identity in one process
