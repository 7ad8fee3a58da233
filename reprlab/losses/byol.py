"""BYOL's regression loss (Grill et al. 2020, "Bootstrap your own latent", eq. 2).

The online network's prediction ``p`` of one view regresses the target network's projection
``z`` of the other view, both L2-normalised:

    L = || p/|p| - z/|z| ||^2 = 2 - 2 * <p, z> / (|p| |z|)

BYOL symmetrises by swapping the views (``byol_loss(p1, z2) + byol_loss(p2, z1)``); that is
the method's job, as is stopping the gradient into the target: the target network is an EMA of
the online one and gets no gradient, so callers pass ``z`` from a ``torch.no_grad()`` forward
(or ``z.detach()``). This function does *not* detach, so it stays a plain function of both
arguments (and the tests can check its gradient in ``z`` too).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from reprlab.losses._common import check_matrix, check_same_shape, compute_dtype
from reprlab.losses._common import full_precision

__all__ = ["byol_loss"]


@full_precision
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ``|| p_i/|p_i| - z_i/|z_i| ||^2 = 2 - 2 cos(p_i, z_i)``.

    Args:
        p: (B, D) online predictions (any floating dtype; computed in at least float32).
        z: (B, D) target projections of the *other* view. Not detached here: the caller
            passes target-network outputs, which carry no gradient.

    Returns:
        A scalar in [0, 4]: 0 when every ``p_i`` points along ``z_i``, 4 when opposite.

    Raises:
        ReprlabError: for non-2-D, non-floating or mismatched inputs.
    """
    check_matrix(p, "prediction p", "BYOL")
    check_matrix(z, "target z", "BYOL")
    check_same_shape(p, z, "p and z", "BYOL")
    dtype = compute_dtype(p, z)
    # The squared distance of the unit vectors, rather than 2 - 2 cos: near convergence
    # (cos -> 1) the latter subtracts two numbers close to 2 and, in float32, keeps only the
    # first digit or two of a loss of ~1e-6; the difference of unit vectors keeps them all.
    diff = F.normalize(p.to(dtype), dim=1) - F.normalize(z.to(dtype), dim=1)
    return diff.pow(2).sum(dim=1).mean()
