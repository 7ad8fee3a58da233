"""SwAV's Sinkhorn-Knopp codes and swapped-prediction loss (Caron et al. 2020, "Unsupervised
learning of visual features by contrasting cluster assignments", eqs. 1-5 and Algorithm 1).

Codes. For scores ``S`` (B samples x K prototypes, cosine similarities of unit features with
unit prototypes), SwAV solves an entropy-regularised equipartition problem with a few
Sinkhorn-Knopp iterations (eq. 5 and Sec. A.1): start from ``Q = exp(S / eps)``, then
alternately rescale so that every prototype holds total mass 1/K and every sample mass 1/B;
finally scale by B so that each sample's code sums to 1.

Loss. Codes are computed for the crops in ``crops_for_assign`` (the global crops) and each is
predicted from every *other* crop's scores:

    l(q_i, s_j) = -sum_k q_i[k] log softmax(s_j / T)[k]
    L = mean over assigned crops i of  mean over crops j != i of  mean_b l(q_i[b], s_j[b])

Defaults follow the paper: ``eps = 0.05``, 3 iterations, ``T = 0.1``. With small batches
(CIFAR recipes, including solo-learn's, which keeps a queue of 3840 past features from epoch
50 on) the caller prepends the queue's scores to the batch before Sinkhorn and keeps only the
batch rows of the result: ``sinkhorn_knopp(torch.cat([queue_scores, scores]))[-B:]``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses._common import (
    AllReduceFn,
    as_crop_list,
    check_matrix,
    check_positive,
    compute_dtype,
    resolve_all_reduce,
    full_precision,
)

__all__ = ["sinkhorn_knopp", "swav_loss"]


@full_precision
@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor,
    epsilon: float = 0.05,
    n_iters: int = 3,
    all_reduce: Optional[AllReduceFn] = None,
) -> Tensor:
    """Equipartitioned soft codes Q for (B, K) scores (SwAV, Caron et al. 2020, Sec. A.1).

    Args:
        scores: (B, K) prototype scores of the local batch (any floating dtype; computed in
            at least float32, in float64 for float64 input). Overflow is avoided for any
            scale; in float32 a sample whose scores all lie more than ~87 * epsilon below
            the prototypes' maxima underflows to zero (and NaN codes), which bounded scores
            such as SwAV's cosine similarities (range 2, i.e. 40 at epsilon 0.05) never reach.
        epsilon: entropy regularisation, > 0; smaller is closer to hard assignments.
        n_iters: Sinkhorn iterations, >= 1; each ends with the per-sample rescaling.
        all_reduce: optional sum-over-ranks hook. It sums the per-prototype masses (and the
            batch size and the shift below) over ranks, so prototypes are equipartitioned
            over the *global* batch while each rank keeps only its own rows. It need not be
            differentiable: codes are targets and carry no gradient.

    Returns:
        (B, K) codes, no gradient. Each row sums to 1 (exactly, up to rounding); prototype
        totals ``Q.sum(0)`` approach ``B_global / K`` as the iterations converge.

    Raises:
        ReprlabError: for non-2-D or non-floating scores, ``epsilon <= 0`` or ``n_iters < 1``.
    """
    eps = check_positive(epsilon, "epsilon", "Sinkhorn-Knopp")
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise ReprlabError(f"Sinkhorn-Knopp n_iters {n_iters!r} is invalid; expected an int >= 1")
    check_matrix(scores, "scores", "Sinkhorn-Knopp")
    reduce = resolve_all_reduce(all_reduce)
    logits = scores.to(compute_dtype(scores)) / eps
    n_prototypes = logits.shape[1]
    batch_global, world = reduce(logits.new_tensor([float(logits.shape[0]), 1.0])).unbind()

    # exp(S / eps) overflows float32 once S / eps > 88 (S > 4.4 at eps = 0.05). A factor per
    # prototype is removed exactly by the first per-prototype rescaling, so subtract one --
    # the same on every rank: the mean over ranks of each prototype's local maximum.
    # (The paper's first step, dividing by the total mass, is a scalar that the same rescaling
    # cancels, so it is left out, saving a collective.)
    shift = reduce(logits.max(dim=0, keepdim=True).values) / world
    q = torch.exp(logits - shift)
    for _ in range(n_iters):
        q = q / (reduce(q.sum(dim=0, keepdim=True)) * n_prototypes)  # each prototype: 1/K
        q = q / (q.sum(dim=1, keepdim=True) * batch_global)  # each sample: 1/B
    return q * batch_global


@full_precision
def swav_loss(
    scores_per_crop: Sequence[Tensor] | Tensor,
    q_per_global_crop: Sequence[Tensor] | Tensor,
    temperature: float = 0.1,
    crops_for_assign: Sequence[int] = (0, 1),
) -> Tensor:
    """SwAV's swapped-prediction loss (Caron et al. 2020, eqs. 1-2, multi-crop).

    Args:
        scores_per_crop: the (B, K) prototype scores of all V crops (a sequence or a stacked
            (V, B, K) tensor), in crop order.
        q_per_global_crop: the codes of the crops listed in ``crops_for_assign``, in that
            order, e.g. from :func:`sinkhorn_knopp` on those crops' (detached) scores.
            Treated as constants; not detached here.
        temperature: ``T > 0``.
        crops_for_assign: indices of the crops whose codes are predicted, distinct, each in
            [0, V); V >= 2.

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).

    Raises:
        ReprlabError: for mismatched shapes, bad crop indices or temperature.
    """
    t = check_positive(temperature, "temperature", "SwAV")
    scores = as_crop_list(scores_per_crop, None, "scores_per_crop", "SwAV")
    codes = as_crop_list(q_per_global_crop, None, "q_per_global_crop", "SwAV")
    assigned = [int(i) for i in crops_for_assign]
    n_views = len(scores)
    if (
        n_views < 2
        or not assigned
        or len(set(assigned)) != len(assigned)
        or any(not 0 <= i < n_views for i in assigned)
        or len(codes) != len(assigned)
    ):
        raise ReprlabError(
            f"SwAV got {n_views} crop(s) of scores, {len(codes)} of codes and crops_for_assign="
            f"{tuple(crops_for_assign)}; expected >= 2 crops and one code per distinct crop "
            "index in [0, crops)"
        )
    if codes[0].shape != scores[0].shape:
        raise ReprlabError(
            f"SwAV codes have shape {tuple(codes[0].shape)} and scores "
            f"{tuple(scores[0].shape)}; expected equal (B, K)"
        )
    batch = scores[0].shape[0]
    dtype = compute_dtype(*scores, *codes)
    log_p = torch.log_softmax(torch.stack(scores).to(dtype) / t, dim=-1)  # (V, B, K)
    q = torch.stack(codes).to(dtype)  # (A, B, K)
    ce = -torch.einsum("abk,vbk->av", q, log_p) / batch  # ce[a, v]: code a from crop v
    own_crop = torch.zeros_like(ce, dtype=torch.bool)
    rows = torch.arange(len(assigned), device=ce.device)
    own_crop[rows, torch.tensor(assigned, device=ce.device)] = True
    # Every assigned crop has V - 1 partners, so the mean over all pairs is the mean over
    # assigned crops of the per-crop means.
    return ce.masked_select(~own_crop).mean()
