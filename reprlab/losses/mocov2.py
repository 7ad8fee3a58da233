"""MoCo's InfoNCE loss with a queue of negatives (He et al. 2020, "Momentum contrast for
unsupervised visual representation learning", eq. 1 and Algorithm 1; Chen et al. 2020,
"Improved baselines with momentum contrastive learning" (MoCo v2), which keeps this loss).

A query ``q`` (online encoder) has one positive key ``k`` (momentum encoder, same image, other
view) and K negatives: the queue of keys of earlier batches. With unit vectors and temperature
``t`` the logits of sample i are ``[q_i . k_i, q_i . queue_1, ..., q_i . queue_K] / t`` and

    L = mean_i  -log softmax(logits_i)_0

i.e. a (K+1)-way cross-entropy whose target is always class 0, the positive.

The keys come from the momentum encoder, which gets no gradient: callers compute ``k`` under
``torch.no_grad()`` (or detach it); this function does not detach. The queue holds keys that
were already L2-normalised when enqueued (as in the paper), so it is used as given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses._common import (
    check_matrix,
    check_positive,
    check_same_shape,
    compute_dtype,
    softplus_threshold,
    full_precision,
)

__all__ = ["moco_infonce", "moco_logits"]


@full_precision
def moco_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """The (B, 1 + K) MoCo logits; column 0 holds the positives ``q_i . k_i / t``.

    Args:
        q: (B, D) queries; L2-normalised here.
        k: (B, D) positive keys; L2-normalised here. A constant for the caller (no gradient).
        queue: (K, D) negative keys, already unit rows, K >= 0 (K = 0 leaves only the positive).
        temperature: ``t > 0``; MoCo v2 uses 0.2 (MoCo v1: 0.07).

    Raises:
        ReprlabError: for bad shapes, dtypes or temperature.
    """
    t = check_positive(temperature, "temperature", "MoCo")
    check_matrix(q, "queries q", "MoCo")
    check_matrix(k, "keys k", "MoCo")
    check_same_shape(q, k, "q and k", "MoCo")
    if not isinstance(queue, Tensor) or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        shape = tuple(queue.shape) if isinstance(queue, Tensor) else type(queue).__name__
        raise ReprlabError(f"MoCo queue has shape {shape}; expected (K, {q.shape[1]})")
    if not queue.is_floating_point():
        raise ReprlabError(f"MoCo queue has dtype {queue.dtype}; expected floating point")
    dtype = compute_dtype(q, k, queue)
    q_unit = F.normalize(q.to(dtype), dim=1)
    k_unit = F.normalize(k.to(dtype), dim=1)
    positives = (q_unit * k_unit).sum(dim=1, keepdim=True)  # (B, 1)
    negatives = q_unit @ queue.to(dtype).T  # (B, K)
    return torch.cat([positives, negatives], dim=1) / t


@full_precision
def moco_infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """Mean over the batch of the (K+1)-way cross-entropy with the positive as class 0.

    Args and errors as :func:`moco_logits`.

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).
    """
    logits = moco_logits(q, k, queue, temperature)
    # Cross-entropy with target 0 written as softplus(logsumexp(negatives) - positive), as in
    # NT-Xent: logsumexp(row) - positive cancels to a few digits in float32 once the positive
    # dominates (a loss of ~1e-4 keeps about two), softplus keeps them all. With an empty
    # queue the log-sum-exp is -inf and the loss exactly 0.
    negatives_lse = torch.logsumexp(logits[:, 1:], dim=1)
    threshold = softplus_threshold(logits.dtype)
    return F.softplus(negatives_lse - logits[:, 0], threshold=threshold).mean()
