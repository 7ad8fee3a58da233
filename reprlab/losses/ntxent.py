"""NT-Xent: the normalized-temperature cross-entropy loss of SimCLR (Chen et al. 2020).

Given two augmented views ``z1[i]`` and ``z2[i]`` of the same N images, every one of the 2N
views is an anchor whose positive is its partner view and whose negatives are the other 2N-2
views of the batch (plus, optionally, views held by other ranks). With cosine similarity
``s(a, b) = a.b / (|a| |b|)`` and temperature ``t`` the loss of anchor ``i`` with positive ``p`` is

    l_i = -log( exp(s_ip / t) / sum_{k != i} exp(s_ik / t) )

and the loss returned is the mean of ``l_i`` over all 2N anchors.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reprlab.errors import ReprlabError
from reprlab.losses._common import softplus_threshold
from reprlab.losses._common import full_precision

__all__ = ["GatherFn", "NTXentLoss", "nt_xent"]

#: Returns the rows held by the *other* ranks for the local (2N, D) block it is given.
GatherFn = Callable[[Tensor], Tensor]


def _check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float, or raise if it is not a finite positive number."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ReprlabError(
            f"NT-Xent temperature {temperature!r} is not a number; expected a float > 0"
        ) from None
    if not math.isfinite(value) or value <= 0.0:
        raise ReprlabError(f"NT-Xent temperature {temperature!r} is invalid; expected a float > 0")
    return value


@full_precision
def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.5,
    gather: Optional[GatherFn] = None,
) -> Tensor:
    """Mean NT-Xent loss over the 2N views of a batch (SimCLR, Chen et al. 2020, eq. 1).

    Args:
        z1: (N, D) embeddings of the first view, N >= 2. Any floating dtype; the loss is
            computed in at least float32 so bf16/fp16 inputs do not lose the small
            differences between similarities that the softmax amplifies by ``1/temperature``.
        z2: (N, D) embeddings of the second view; ``z2[i]`` is the positive of ``z1[i]``.
            Neither input needs to be normalised: rows are L2-normalised here.
        temperature: softmax temperature ``t > 0``.
        gather: optional multi-rank hook (``reprlab.distributed.gather_others`` in SimCLR). It is
            called once with the local (2N, D) block of *normalised* views ``[z1; z2]`` and
            must return the (M, D) rows held by all *other* ranks, M >= 0. Those rows are
            extra negatives for every local anchor, while positives stay local. A DDP
            implementation is a differentiable all-gather
            (``reprlab.distributed.gather_others``) with the own rank's slot dropped,
            so that gradients reach the rank that produced each negative.

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).

    Raises:
        ReprlabError: for non-2-D or mismatched inputs, N < 2, a non-floating dtype,
            ``temperature <= 0`` or a gather result of the wrong shape.
    """
    t = _check_temperature(temperature)
    if not isinstance(z1, Tensor) or not isinstance(z2, Tensor):
        raise ReprlabError(
            f"NT-Xent inputs must be tensors, got {type(z1).__name__} and {type(z2).__name__}"
        )
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ReprlabError(
            f"NT-Xent views have shapes {tuple(z1.shape)} and {tuple(z2.shape)}; "
            "expected two equal (N, D) shapes"
        )
    n = z1.shape[0]
    if n < 2:
        raise ReprlabError(f"NT-Xent batch size {n} is too small; expected N >= 2 (no negatives)")
    if not (z1.is_floating_point() and z2.is_floating_point()):
        raise ReprlabError(
            f"NT-Xent inputs have dtypes {z1.dtype} and {z2.dtype}; expected floating point"
        )

    # Promote to at least float32: in bf16 two similarities 0.99 and 0.995 round to the same
    # value, and dividing by a small temperature would turn that rounding into a large error.
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    views = F.normalize(torch.cat([z1, z2], dim=0).to(dtype), dim=1)  # (2N, D), unit rows

    candidates = views
    if gather is not None:
        remote = gather(views)
        if not isinstance(remote, Tensor) or remote.ndim != 2 or remote.shape[1] != views.shape[1]:
            shape = tuple(remote.shape) if isinstance(remote, Tensor) else type(remote).__name__
            raise ReprlabError(
                f"NT-Xent gather returned {shape}; expected an (M, {views.shape[1]}) tensor"
            )
        # Normalising again is idempotent for rows that a remote rank already normalised and
        # keeps the loss a cosine-similarity loss whatever the gather hook hands back.
        remote = F.normalize(remote.to(device=views.device, dtype=dtype), dim=1)
        candidates = torch.cat([views, remote], dim=0)

    logits = views @ candidates.T / t  # (2N, 2N + M)
    anchors = torch.arange(2 * n, device=views.device)
    positives = (anchors + n) % (2 * n)  # view i of z1 pairs with view i of z2 and vice versa
    positive_logits = logits[anchors, positives]

    # Split each row into its positive a and the log-sum-exp b of its negatives only; then
    # l = log(e^a + e^b) - a = softplus(b - a). The textbook form logsumexp(row) - a subtracts
    # two numbers of size ~1/t whose difference can be tiny (well-separated positives), which
    # in float32 loses most significant digits; softplus keeps full relative precision there.
    # Masking with -inf (not a large finite negative) gives those entries exactly zero weight
    # at any temperature; b stays finite because N >= 2 leaves 2N - 2 >= 2 local negatives.
    excluded = torch.zeros_like(logits, dtype=torch.bool)
    excluded[anchors, anchors] = True  # an anchor is never its own negative
    excluded[anchors, positives] = True
    negatives_lse = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    per_anchor = F.softplus(negatives_lse - positive_logits, threshold=softplus_threshold(dtype))
    return per_anchor.mean()


class NTXentLoss(nn.Module):
    """Module wrapper around :func:`nt_xent` (SimCLR, Chen et al. 2020).

    Attributes:
        temperature: softmax temperature, validated at construction.
        gather: optional multi-rank negatives hook, see :func:`nt_xent`.
    """

    def __init__(self, temperature: float = 0.5, gather: Optional[GatherFn] = None) -> None:
        super().__init__()
        self.temperature: float = _check_temperature(temperature)
        self.gather: Optional[GatherFn] = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Return the mean NT-Xent loss of the two (N, D) view batches."""
        return nt_xent(z1, z2, self.temperature, gather=self.gather)

    def extra_repr(self) -> str:
        """Show the temperature in ``print(model)``."""
        return f"temperature={self.temperature}"
