"""MoCo v3's in-batch contrastive loss (Chen, Xie & He 2021, "An empirical study of training
self-supervised vision transformers", Algorithm 1).

MoCo v3 drops the queue: the negatives of query ``q_i`` are the keys of the other images of
the same (global) batch. With unit vectors and temperature ``t``,

    logits = q k^T / t          (B, M): M keys, gathered from all ranks
    L = 2 t * CE(logits, labels),  labels_i = i + rank * B

The factor ``2 t`` is the paper's (it makes the gradient scale independent of ``t``). The
method symmetrises by calling the loss twice, ``mocov3_loss(q1, k2) + mocov3_loss(q2, k1)``.
Keys come from the momentum encoder and get no gradient: callers compute them under
``torch.no_grad()`` (the all-gather of keys need not be differentiable); this function does
not detach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses._common import check_matrix, check_positive, compute_dtype, softplus_threshold
from reprlab.losses._common import full_precision

__all__ = ["mocov3_loss"]


@full_precision
def mocov3_loss(q: Tensor, k: Tensor, temperature: float = 0.2, rank_offset: int = 0) -> Tensor:
    """``2 t`` times the mean cross-entropy of ``q k^T / t`` against the matching keys.

    Args:
        q: (B, D) local queries; L2-normalised here.
        k: (M, D) keys, M >= B: the local (B, D) keys on one process, or the keys of all
            ranks concatenated in rank order, (world * B, D). L2-normalised here.
        temperature: ``t > 0``. The paper uses 0.2 for ViTs (1.0 for ResNet-50).
        rank_offset: row of ``k`` holding the positive of ``q[0]``, i.e. ``rank * B`` when
            ``k`` is gathered; query i's positive is ``k[rank_offset + i]``.

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).

    Raises:
        ReprlabError: for bad shapes, dtypes, temperature or an offset outside [0, M - B].
    """
    t = check_positive(temperature, "temperature", "MoCo v3")
    check_matrix(q, "queries q", "MoCo v3")
    check_matrix(k, "keys k", "MoCo v3")
    batch, dim = q.shape
    if k.shape[1] != dim or k.shape[0] < batch:
        raise ReprlabError(
            f"MoCo v3 keys have shape {tuple(k.shape)} for queries {tuple(q.shape)}; "
            f"expected (M, {dim}) with M >= {batch}"
        )
    if isinstance(rank_offset, bool) or not isinstance(rank_offset, int):
        raise ReprlabError(f"MoCo v3 rank_offset {rank_offset!r} is not an int")
    if not 0 <= rank_offset <= k.shape[0] - batch:
        raise ReprlabError(
            f"MoCo v3 rank_offset {rank_offset} is out of range; expected 0 <= offset <= "
            f"{k.shape[0] - batch} for {k.shape[0]} keys and {batch} queries"
        )
    dtype = compute_dtype(q, k)
    logits = F.normalize(q.to(dtype), dim=1) @ F.normalize(k.to(dtype), dim=1).T / t
    rows = torch.arange(batch, device=logits.device)
    positives = logits[rows, rows + rank_offset]
    # Cross-entropy written as softplus(logsumexp(negatives) - positive), which keeps its
    # relative precision in float32 when the positive dominates (see NT-Xent). Masking with
    # -inf gives the positive exactly zero weight among the negatives.
    negatives = logits.index_put((rows, rows + rank_offset), logits.new_tensor(float("-inf")))
    per_query = F.softplus(
        torch.logsumexp(negatives, dim=1) - positives, threshold=softplus_threshold(dtype)
    )
    return per_query.mean() * (2.0 * t)
