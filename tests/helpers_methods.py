"""Helpers for the method-specific tests (tests/methods/test_<name>.py): a tiny method on the CPU,
one optimiser update through the loop's own ``train_step``, and whole methods on simulated
data-parallel ranks.

:class:`MethodWorld` patches ``reprlab.distributed`` so that each thread of a
:class:`helpers_ranks.ThreadWorld` is one rank: ``all_reduce_sum`` sums over the threads
(differentiably), ``gather`` concatenates the ranks' tensors in rank order (an all-reduce of
zero-padded slots, so it is differentiable too), ``world_size`` and ``rank`` answer per thread.
A method written against ``reprlab.distributed`` then runs on 2 "ranks" unchanged, and its
global-batch statistics can be compared with a single-process computation on the concatenated
batch.
"""

from __future__ import annotations

import dataclasses
import threading

import torch

from helpers_ranks import ThreadWorld
from reprlab import distributed
from reprlab.config import load_config
from reprlab.methods.base import StepContext
from reprlab.registry import METHODS
from reprlab.train.loop import train_step


def tiny_overrides(name: str) -> list[str]:
    """Shrink every width, queue and prototype count of a method's config for a CPU test."""
    out = [f'method.name="{name}"', "model.kwargs.width=8", "train.precision=fp32", "method.knn_bank_size=1000"]
    for f in dataclasses.fields(METHODS.get(name).Config):
        default = getattr(METHODS.get(name).Config(), f.name)
        if isinstance(default, int) and not isinstance(default, bool):
            if (f.name.endswith("_dim") and default > 64) or (f.name in ("queue_size", "num_prototypes") and default > 128):
                out.append(f"method.{f.name}={64 if f.name.endswith('_dim') else 128}")
    return out


def tiny_cfg(name: str, tmp_path=None, *extra):
    over = tiny_overrides(name) + list(extra)
    if tmp_path is not None:
        over += [f'run.out_dir="{tmp_path}"', f'data.cache_dir="{tmp_path}/cache"']
    return load_config(f"configs/pretrain/{name}_cifar100.toml", over)


def tiny_method(name: str, splits, *overrides: str, seed: int = 0):
    """Method ``name`` from its CIFAR recipe, shrunk like the contract test's, on the CPU."""
    torch.manual_seed(seed)
    return METHODS.get(name)(tiny_cfg(name, None, *overrides), splits, torch.device("cpu"))


def adamw(method, lr: float = 2e-3) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW([p for _, p, _ in method.named_trainable()], lr=lr, weight_decay=0.0)
    return opt


def update(method, opt, images, generator, step: int, total: int = 100, per_epoch: int = 100):
    """One update at ``step`` through the loop's train_step (hooks included)."""
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    method.set_train_mode()
    return train_step(method, opt, scaler, images, images.new_zeros(len(images), dtype=torch.long), generator, StepContext(step, total, per_epoch))


def batch(splits, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` real CIFAR-100 training images (uint8), a fixed random choice."""
    idx = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed))[:n]
    return splits.train.images[idx]


def capture_outputs(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every output of ``module``'s forward from now on (detached), in call order."""
    out: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, _i, o: out.append(o.detach().clone()))
    return out


def capture_inputs(module: torch.nn.Module) -> list[torch.Tensor]:
    """Every (first) input of ``module``'s forward from now on (detached), in call order."""
    out: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, i, _o: out.append(i[0].detach().clone()))
    return out


class MethodWorld:
    """``world_size`` simulated ranks with ``reprlab.distributed`` patched (see module docstring)."""

    def __init__(self, world_size: int, monkeypatch) -> None:
        self.world = ThreadWorld(world_size)
        self.local = threading.local()
        monkeypatch.setattr(distributed, "world_size", lambda: world_size)
        monkeypatch.setattr(distributed, "rank", lambda: self.local.rank)
        monkeypatch.setattr(distributed, "all_reduce_sum", lambda t: self.local.all_reduce(t))
        monkeypatch.setattr(distributed, "gather", self._gather)
        monkeypatch.setattr(distributed, "gather_nograd", lambda t: self._gather(t).detach())

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        slots = [torch.zeros_like(t) for _ in range(self.world.world_size)]
        slots[self.local.rank] = t
        return self.local.all_reduce(torch.cat(slots))

    def run(self, fn):
        """``fn(rank)`` on every rank at once; the results by rank."""

        def per_rank(rank, all_reduce):
            self.local.rank, self.local.all_reduce = rank, all_reduce
            return fn(rank)

        return self.world.run(per_rank)
