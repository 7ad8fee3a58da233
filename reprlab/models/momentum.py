"""Momentum (EMA) targets: the slowly moving copy of a network that BYOL, MoCo and DINO learn
against.

``target = m * target + (1 - m) * online`` after every optimiser step, parameters only: the
target's BatchNorm statistics are its own (it runs in training mode on its inputs), as in BYOL
(Grill et al. 2020) and MoCo (He et al. 2020). A target never receives gradients and is not
seen by the optimiser.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` to serve as its EMA target."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: every target parameter becomes ``m * target + (1 - m) * online``."""
    tp, op = list(target.parameters()), list(online.parameters())
    if len(tp) != len(op):
        raise ValueError(f"EMA target has {len(tp)} parameters, online network {len(op)}")
    torch._foreach_mul_(tp, momentum)
    torch._foreach_add_(tp, op, alpha=1.0 - momentum)
