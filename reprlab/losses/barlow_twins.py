"""Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, "Barlow Twins:
self-supervised learning via redundancy reduction", eqs. 1-2 and Algorithm 1).

Each embedding dimension is standardised over the batch (batch norm without affine
parameters: biased variance, ``eps`` inside the square root), and the cross-correlation of
the two views' standardised embeddings is pushed towards the identity:

    C_ij = sum_b zn1_bi zn2_bj / N
    L = scale * ( sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2 )

The loss is split into two composable pieces, :func:`cross_correlation` and
:func:`barlow_twins_from_cc`, so a caller can build C however it likes.

Data parallel: pass ``all_reduce`` (a differentiable sum over ranks). It is applied to the
per-rank *sums* -- the sample count, the per-dimension sums and squared deviations that give
the batch statistics, and ``sum_b zn1_b zn2_b^T`` -- and every sum is divided by the global
count. The result is then exactly the single-process loss on the concatenated global batch,
which is what the paper's implementation computes with synchronised batch norm.

Coefficients: ``lambd`` defaults to 0.0051, the value of the paper's released code (the text
says ~5e-3), and ``scale`` to 1.0, i.e. the paper's loss. solo-learn's CIFAR recipe keeps
``lambd = 0.0051`` and multiplies the loss by ``scale_loss = 0.1``; pass ``scale=0.1`` to
follow it (a constant factor: under plain SGD it acts as a smaller learning rate; under LARS,
whose layer-wise trust ratio divides by the gradient norm, it mainly shifts the balance
between the loss and weight decay).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses._common import (
    AllReduceFn,
    check_matrix,
    check_nonnegative,
    check_positive,
    check_same_shape,
    compute_dtype,
    resolve_all_reduce,
    full_precision,
)

__all__ = ["barlow_twins_from_cc", "barlow_twins_loss", "cross_correlation"]


@full_precision
def cross_correlation(
    z1: Tensor, z2: Tensor, eps: float = 1e-5, all_reduce: Optional[AllReduceFn] = None
) -> Tensor:
    """The (D, D) cross-correlation of the batch-standardised embeddings of two views.

    Args:
        z1: (N, D) embeddings of view 1 (computed in at least float32).
        z2: (N, D) embeddings of view 2; row b is the same image as ``z1[b]``.
        eps: added to the biased batch variance before the square root, as batch norm does
            (default 1e-5, ``nn.BatchNorm1d``'s).
        all_reduce: optional sum-over-ranks hook (see the module docstring); ``None`` is one
            process. Called four times, in the same order on every rank.

    Returns:
        ``C`` with ``C_ij = sum_b zn1_bi zn2_bj / N_global``; entries lie in [-1, 1] when
        ``eps = 0``.

    Raises:
        ReprlabError: for mismatched or non-floating inputs, an empty batch or ``eps < 0``.
    """
    eps = check_nonnegative(eps, "eps", "Barlow Twins")
    check_matrix(z1, "embeddings z1", "Barlow Twins")
    check_matrix(z2, "embeddings z2", "Barlow Twins")
    check_same_shape(z1, z2, "z1 and z2", "Barlow Twins")
    reduce = resolve_all_reduce(all_reduce)
    dtype = compute_dtype(z1, z2)
    views = torch.stack([z1.to(dtype), z2.to(dtype)])  # (2, N, D): both views at once

    # The statistics from global sums; two passes (mean, then squared deviations from that
    # mean) rather than E[z^2] - E[z]^2, which cancels catastrophically for offset features.
    count = reduce(views.new_tensor(float(views.shape[1])))
    mean = reduce(views.sum(dim=1, keepdim=True)) / count
    centred = views - mean
    var = reduce(centred.pow(2).sum(dim=1, keepdim=True)) / count  # biased, as batch norm
    standardised = centred / torch.sqrt(var + eps)
    return reduce(standardised[0].T @ standardised[1]) / count


@full_precision
def barlow_twins_from_cc(c: Tensor, lambd: float = 0.0051, scale: float = 1.0) -> Tensor:
    """``scale * (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2)`` for a (D, D) ``C``.

    Args:
        c: square cross-correlation matrix, e.g. from :func:`cross_correlation`.
        lambd: weight of the redundancy-reduction (off-diagonal) term, >= 0.
        scale: overall factor, > 0 (solo-learn's ``scale_loss``; 1.0 is the paper).

    Raises:
        ReprlabError: for a non-square or non-floating ``c`` or bad coefficients.
    """
    lambd = check_nonnegative(lambd, "lambd", "Barlow Twins")
    scale = check_positive(scale, "scale", "Barlow Twins")
    if not isinstance(c, Tensor) or c.ndim != 2 or c.shape[0] != c.shape[1]:
        shape = tuple(c.shape) if isinstance(c, Tensor) else type(c).__name__
        raise ReprlabError(f"Barlow Twins cross-correlation has shape {shape}; expected (D, D)")
    if not c.is_floating_point():
        raise ReprlabError(f"Barlow Twins cross-correlation has dtype {c.dtype}; expected float")
    diagonal = torch.diagonal(c)
    on_diag = (1.0 - diagonal).pow(2).sum()
    # Zero the diagonal rather than subtracting its squares from the total: for C near the
    # identity the total is ~D while the off-diagonal part is small, and the subtraction
    # would leave it with float32 rounding noise of ~D * 6e-8.
    off_diag = (c - torch.diag_embed(diagonal)).pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


@full_precision
def barlow_twins_loss(
    z1: Tensor,
    z2: Tensor,
    lambd: float = 0.0051,
    scale: float = 1.0,
    eps: float = 1e-5,
    all_reduce: Optional[AllReduceFn] = None,
) -> Tensor:
    """The Barlow Twins loss of two (N, D) view batches (Zbontar et al. 2021, eq. 1).

    ``barlow_twins_from_cc(cross_correlation(z1, z2, eps, all_reduce), lambd, scale)``; see
    those two functions for the arguments.

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).
    """
    return barlow_twins_from_cc(cross_correlation(z1, z2, eps, all_reduce), lambd, scale)
