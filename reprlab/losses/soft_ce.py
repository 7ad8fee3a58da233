"""Cross-entropy that accepts hard class indices or soft (mixed) target distributions.

Soft targets come from batch mixing, Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019),
whose targets are convex combinations of two one-hot vectors. Label smoothing mixes the target
with the uniform distribution, ``(1 - eps) * p + eps / C``, which for one-hot ``p`` is the
definition :func:`torch.nn.functional.cross_entropy` uses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses._common import full_precision

__all__ = ["soft_cross_entropy"]


@full_precision
def soft_cross_entropy(logits: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean over the batch of ``-sum_c q_c log softmax(logits)_c``.

    Args:
        logits: (B, C) unnormalised class scores. Computed in at least float32, because
            log-softmax in bf16 loses the small probabilities that dominate the gradient.
        target: either integer class indices of shape (B,) or a floating (B, C) probability
            tensor (rows are assumed to sum to 1; that is not checked, to avoid a host sync).
        label_smoothing: ``eps`` in [0, 1); the target becomes ``(1 - eps) * q + eps / C``.

    Returns:
        A scalar tensor; for hard labels it equals ``F.cross_entropy(logits, target,
        label_smoothing=eps)``.

    Raises:
        ReprlabError: for wrong shapes or dtypes, ``eps`` outside [0, 1), or (on CPU, where
            the check is free of a device sync) class indices outside [0, C).
    """
    try:
        eps = float(label_smoothing)
    except (TypeError, ValueError):
        raise ReprlabError(
            f"label_smoothing {label_smoothing!r} is not a number; expected a float in [0, 1)"
        ) from None
    if not math.isfinite(eps) or not 0.0 <= eps < 1.0:
        raise ReprlabError(f"label_smoothing {label_smoothing!r} is invalid; expected [0, 1)")
    if logits.ndim != 2 or not logits.is_floating_point():
        raise ReprlabError(
            f"logits have shape {tuple(logits.shape)} and dtype {logits.dtype}; "
            "expected a floating (B, C) tensor"
        )
    batch, num_classes = logits.shape
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_probs = torch.log_softmax(logits.to(dtype), dim=1)

    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ReprlabError(
                f"soft target has shape {tuple(target.shape)}; expected {tuple(logits.shape)} "
                "to match the logits"
            )
        per_sample = -(target.to(dtype) * log_probs).sum(dim=1)
    else:
        if target.dtype == torch.bool or target.is_complex() or target.shape != (batch,):
            raise ReprlabError(
                f"hard target has shape {tuple(target.shape)} and dtype {target.dtype}; "
                f"expected integer class indices of shape ({batch},)"
            )
        if target.device.type == "cpu" and batch > 0:
            low, high = int(target.min()), int(target.max())
            if low < 0 or high >= num_classes:
                bad = low if low < 0 else high
                raise ReprlabError(
                    f"class index {bad} is out of range; expected 0 <= index < {num_classes}"
                )
        # Picking the log-probability directly avoids materialising a one-hot (B, C) tensor.
        per_sample = -log_probs.gather(1, target.long().unsqueeze(1)).squeeze(1)

    if eps > 0.0:
        # The smoothed target's uniform part contributes eps * mean_c(-log p_c) regardless of
        # the original target, so it can be added after the fact for both target kinds.
        per_sample = (1.0 - eps) * per_sample - eps * log_probs.mean(dim=1)
    return per_sample.mean()
