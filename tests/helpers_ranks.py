"""Simulated data-parallel ranks for testing the losses' ``all_reduce`` hooks.

Each rank is a thread running the same function on its own shard of a batch. The hook handed
to rank r sums its argument over all ranks (in rank order, so every rank gets bit-identical
results), like a sum all-reduce. It is differentiable with the semantics of
``torch.distributed.nn.functional.all_reduce``: the backward pass all-reduces the incoming
gradients. If every rank computes the same loss L, rank r's gradient with respect to its own
shard is therefore ``world * dL/dshard_r``.

Collectives must be called the same number of times in the same order on every rank; a rank
that fails aborts the barrier so that the others fail fast instead of hanging.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


class ThreadWorld:
    """``world_size`` threads that can sum tensors over each other."""

    def __init__(self, world_size: int, timeout_s: float = 30.0) -> None:
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size, timeout=timeout_s)
        self._slots: list[Tensor | None] = [None] * world_size
        self.calls = [0] * world_size  # collectives issued per rank

    def _exchange(self, rank: int, tensor: Tensor) -> Tensor:
        self._slots[rank] = tensor.detach().clone()
        self._barrier.wait()
        total = self._slots[0]
        for other in self._slots[1:]:
            total = total + other
        self._barrier.wait()  # nobody overwrites a slot before every rank has summed
        return total

    def all_reduce_for(self, rank: int) -> Callable[[Tensor], Tensor]:
        """The sum-over-ranks hook of ``rank``."""

        def all_reduce(tensor: Tensor) -> Tensor:
            self.calls[rank] += 1
            return _SumOverRanks.apply(tensor, self, rank)

        return all_reduce

    def run(self, fn: Callable[[int, Callable[[Tensor], Tensor]], T]) -> list[T]:
        """Run ``fn(rank, all_reduce)`` on every rank at once; return the results by rank."""
        results: list[Any] = [None] * self.world_size
        errors: list[BaseException] = []

        def target(rank: int) -> None:
            try:
                results[rank] = fn(rank, self.all_reduce_for(rank))
            except BaseException as exc:  # re-raised in the calling thread below
                errors.append(exc)
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


class _SumOverRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: Tensor, world: ThreadWorld, rank: int) -> Tensor:
        ctx.world, ctx.rank = world, rank
        return world._exchange(rank, tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.world._exchange(ctx.rank, grad.contiguous()), None, None
