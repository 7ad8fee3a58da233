"""Class-stratified, seeded index selection: the validation split and nested fractions."""

from __future__ import annotations

import torch

from reprlab.errors import ReprlabError


def _per_class_orders(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """For each class (in label order), its indices in one seeded random order."""
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    orders = []
    for c in torch.unique(labels, sorted=True).tolist():
        idx = torch.nonzero(labels == c).flatten()
        orders.append(idx[torch.randperm(len(idx), generator=g)])
    return orders


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into (train, val) with ``val_size`` images spread evenly over classes.

    Each class contributes ``val_size // C`` images; the remaining ``val_size % C`` go to the
    first classes of a seeded class order, so the split is exact in size and reproducible.
    """
    orders = _per_class_orders(labels, seed)
    n_cls = len(orders)
    if val_size == 0:
        return torch.sort(torch.cat(orders)).values, torch.empty(0, dtype=torch.long)
    base, extra = divmod(val_size, n_cls)
    g = torch.Generator().manual_seed(seed + 1)
    bonus = set(torch.randperm(n_cls, generator=g)[:extra].tolist())
    train, val = [], []
    for c, order in enumerate(orders):
        k = base + (c in bonus)
        if k >= len(order):
            raise ReprlabError(f"data.val_size={val_size} takes {k} images of class {c}, which has only {len(order)}")
        val.append(order[:k])
        train.append(order[k:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def nested_fraction(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-stratified subset holding ``fraction`` of each class.

    Every class is put in one seeded order and the first ``round(fraction * n_c)`` images are
    taken, so for one seed the 10 % subset lies inside the 25 % subset, which lies inside the 50 %
    subset: data-size curves then compare like with like instead of re-drawing the images.
    """
    if not 0.0 < fraction <= 1.0:
        raise ReprlabError(f"data.fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1.0:
        return torch.arange(len(labels))
    picked = []
    for order in _per_class_orders(labels, seed):
        k = max(1, round(fraction * len(order)))
        picked.append(order[:k])
    return torch.sort(torch.cat(picked)).values
