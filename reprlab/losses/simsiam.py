"""SimSiam's symmetrised negative-cosine loss (Chen & He 2021, "Exploring simple Siamese
representation learning", eqs. 1-2 and Algorithm 1).

With predictor outputs ``p1, p2`` and projector outputs ``z1, z2`` of the two views,

    D(p, z) = - p/|p| . z/|z|          (mean over the batch)
    L = 1/2 D(p1, stopgrad(z2)) + 1/2 D(p2, stopgrad(z1))

The stop-gradient on ``z`` is what keeps SimSiam from collapsing (the paper's Sec. 4.1), so
unlike BYOL's loss it is applied here, inside :func:`simsiam_loss`, exactly as in the paper's
formulation: no gradient reaches ``z1`` or ``z2`` through this loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from reprlab.losses._common import check_matrix, check_same_shape, compute_dtype
from reprlab.losses._common import full_precision

__all__ = ["negative_cosine_similarity", "simsiam_loss"]


@full_precision
def negative_cosine_similarity(p: Tensor, z: Tensor) -> Tensor:
    """``D(p, z)``: mean over the batch of ``-cos(p_i, z_i)``, with no stop-gradient.

    Args:
        p: (B, D) predictions; z: (B, D) projections. Computed in at least float32.

    Returns:
        A scalar in [-1, 1].

    Raises:
        ReprlabError: for non-2-D, non-floating or mismatched inputs.
    """
    check_matrix(p, "prediction p", "SimSiam")
    check_matrix(z, "projection z", "SimSiam")
    check_same_shape(p, z, "p and z", "SimSiam")
    dtype = compute_dtype(p, z)
    cosine = (F.normalize(p.to(dtype), dim=1) * F.normalize(z.to(dtype), dim=1)).sum(dim=1)
    return -cosine.mean()


@full_precision
def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """``1/2 D(p1, stopgrad(z2)) + 1/2 D(p2, stopgrad(z1))`` (Chen & He 2021, eq. 2).

    Args:
        p1, p2: (B, D) predictor outputs of views 1 and 2.
        z1, z2: (B, D) projector outputs of views 1 and 2; detached here.

    Returns:
        A scalar in [-1, 1]; -1 is the minimum (each prediction aligned with the other view's
        projection).
    """
    check_matrix(z1, "projection z1", "SimSiam")
    check_matrix(z2, "projection z2", "SimSiam")
    return 0.5 * (
        negative_cosine_similarity(p1, z2.detach()) + negative_cosine_similarity(p2, z1.detach())
    )
