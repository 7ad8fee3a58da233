"""VICReg's variance-invariance-covariance loss (Bardes, Ponce & LeCun 2022, "VICReg:
variance-invariance-covariance regularization for self-supervised learning", eqs. 1-6 and
Algorithm 1).

For two (N, D) embedding batches ``z1, z2`` of the same images, following the paper's
pseudo-code term by term:

    invariance  s = mean_{b,d} (z1_bd - z2_bd)^2                             (MSE)
    variance    v = mean_d relu(1 - sqrt(Var(z1_d) + eps)) + (same for z2)
    covariance  c = sum_{i != j} Cov(z1)_ij^2 / D + (same for z2)
    loss        = sim_coeff * s + std_coeff * v + cov_coeff * c

where ``Var`` and ``Cov`` are the *unbiased* (divide by N - 1) batch estimates, as in the
pseudo-code (``torch.var`` and ``z.T @ z / (N - 1)``). The variance terms of the two branches
are added, as in the paper's pseudo-code; the authors' released code halves their sum, which
amounts to a different ``std_coeff``. Defaults are the paper's (25, 25, 1, eps 1e-4), which
solo-learn's CIFAR recipe also uses.

Data parallel: the paper computes the loss on embeddings all-gathered from every rank; that
gather belongs to the caller (nothing in this function is per-rank).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from reprlab.losses._common import (
    check_matrix,
    check_nonnegative,
    check_positive,
    check_same_shape,
    compute_dtype,
    full_precision,
)

__all__ = ["VICRegTerms", "vicreg_loss"]


class VICRegTerms(NamedTuple):
    """The weighted total and the three *unweighted* terms (each summed over both branches
    where the paper sums them), all scalar tensors; log the terms, optimise ``loss``."""

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _variance_and_covariance(z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """One branch's hinge on the standard deviation and its off-diagonal covariance term."""
    n, d = z.shape
    centred = z - z.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (n - 1)  # unbiased; its diagonal is the unbiased variance
    variance = torch.diagonal(cov)
    std_hinge = torch.relu(1.0 - torch.sqrt(variance + eps)).mean()
    # Zeroing the diagonal (not subtracting its squares from the total) keeps the small
    # off-diagonal sum free of cancellation error from the large diagonal.
    off_diag = cov - torch.diag_embed(variance)
    return std_hinge, off_diag.pow(2).sum() / d


@full_precision
def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg loss of two (N, D) view batches and its three terms (Bardes et al. 2022).

    Args:
        z1: (N, D) expander outputs of view 1, N >= 2 (computed in at least float32).
        z2: (N, D) expander outputs of view 2.
        sim_coeff: weight ``lambda`` of the invariance (MSE) term, >= 0.
        std_coeff: weight ``mu`` of the variance hinge, >= 0.
        cov_coeff: weight ``nu`` of the covariance term, >= 0.
        eps: added to the variance inside the square root, > 0 (keeps the gradient finite
            for a collapsed dimension).

    Returns:
        :class:`VICRegTerms` ``(loss, invariance, variance, covariance)``.

    Raises:
        ReprlabError: for mismatched or non-floating inputs, N < 2 or bad coefficients.
    """
    sim_coeff = check_nonnegative(sim_coeff, "sim_coeff", "VICReg")
    std_coeff = check_nonnegative(std_coeff, "std_coeff", "VICReg")
    cov_coeff = check_nonnegative(cov_coeff, "cov_coeff", "VICReg")
    eps = check_positive(eps, "eps", "VICReg")
    check_matrix(z1, "embeddings z1", "VICReg", min_rows=2)
    check_matrix(z2, "embeddings z2", "VICReg", min_rows=2)
    check_same_shape(z1, z2, "z1 and z2", "VICReg")
    dtype = compute_dtype(z1, z2)
    a, b = z1.to(dtype), z2.to(dtype)

    invariance = (a - b).pow(2).mean()
    std_a, cov_a = _variance_and_covariance(a, eps)
    std_b, cov_b = _variance_and_covariance(b, eps)
    variance = std_a + std_b
    covariance = cov_a + cov_b
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return VICRegTerms(loss, invariance, variance, covariance)
