"""Frozen means verified frozen: a bitwise snapshot of a backbone and the check against it.

A linear protocol whose freezing silently does not happen (a typo in a string compare, a BN
layer left in training mode that keeps updating its running statistics) reports numbers of a
different protocol. Every probe therefore compares each parameter and buffer bit for bit before
and after training and fails loudly on any difference.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reprlab.errors import ReprlabError


def snapshot(module: nn.Module, exclude: set[int] = frozenset()) -> dict[str, torch.Tensor]:
    state = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if id(t) not in exclude:
            state[name] = t.detach().clone()
    return state


def verify_unchanged(module: nn.Module, before: dict[str, torch.Tensor], exclude: set[int] = frozenset()) -> None:
    now = {n: t for n, t in list(module.named_parameters()) + list(module.named_buffers()) if id(t) not in exclude}
    if set(now) != set(before):
        raise ReprlabError(f"frozen backbone changed structure: {sorted(set(now) ^ set(before))[:3]}")
    changed = [n for n, t in now.items() if not torch.equal(t.detach().to(before[n].device), before[n])]
    if changed:
        raise ReprlabError(
            f"frozen backbone was modified during the probe: {len(changed)} tensor(s) changed, e.g. {', '.join(changed[:3])}; "
            "the result would not be a linear-protocol number"
        )
