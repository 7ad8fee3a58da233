"""Collectives that methods use for statistics over the global batch, identities in a single
process.

A method written with these is correct under data parallelism without knowing about it:
MoCo enqueues ``gather(keys)``, Barlow Twins and VICReg reduce their cross-correlation or
covariance sums with ``all_reduce_sum``, DINO's centre and SwAV's Sinkhorn marginals likewise.
``gather`` keeps the autograd graph (torch.distributed's autograd-aware all_gather), so a loss
over gathered embeddings sends gradients back to every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (B, ...) of every rank along dim 0, in rank order; differentiable."""
    if not is_distributed():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()), dim=0)


def gather_nograd(t: torch.Tensor) -> torch.Tensor:
    """As :func:`gather` for tensors that carry no gradient (queue keys, teacher outputs)."""
    if not is_distributed():
        return t
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over ranks (a new tensor; differentiable when distributed)."""
    if not is_distributed():
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t, op=dist.ReduceOp.SUM)


def gather_others(t: torch.Tensor) -> torch.Tensor:
    """The rows of ``t`` held by every *other* rank (differentiable); (0, ...) in one process.

    NT-Xent's ``gather`` hook: another rank's views are extra negatives for the local anchors,
    and the gradient of each flows back to the rank that produced it."""
    if not is_distributed():
        return t[:0]
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(t.contiguous())
    return torch.cat([p for i, p in enumerate(parts) if i != dist.get_rank()], dim=0)
