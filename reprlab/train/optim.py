"""Optimisers over parameter groups: SGD (momentum, Nesterov), AdamW and LARS.

Weight decay policy (one for every architecture, so CNN-vs-ViT comparisons share it): norm
weights and all biases (every parameter with fewer than 2 dimensions, plus ViT position
embeddings and class tokens) are excluded from decay when ``no_decay_norm_bias`` is set.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from reprlab.errors import ReprlabError

NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token")


def param_groups(named: Iterable[tuple[str, nn.Parameter, float]], weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Groups keyed by (lr multiplier, decays?) from ``(name, param, lr_mult)`` triples."""
    groups: dict[tuple[float, bool], list] = {}
    for name, p, mult in named:
        if not p.requires_grad:
            continue
        decays = not (no_decay_norm_bias and (p.ndim < 2 or any(k in name for k in NO_DECAY_NAMES)))
        groups.setdefault((mult, decays), []).append(p)
    return [
        {"params": ps, "lr_mult": mult, "weight_decay": weight_decay if decays else 0.0, "lars_exclude": not decays}
        for (mult, decays), ps in groups.items()
    ]


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) over SGD with momentum.

    The update ``d = g + wd * w`` of each weight tensor is rescaled by ``eta * ||w|| / ||d||``; as in
    SimCLR (Chen et al. 2020) biases and norm parameters (``lars_exclude``) skip both the
    adaptation and the decay.

    ``clip_lr`` is the variant of solo-learn's CIFAR recipes (after apex's LARC): the local rate
    ``eta * ||w|| / (||g|| + wd * ||w||)`` (the LARS paper's) caps the step instead of scaling it,
    so each tensor moves by ``min(local, lr) * d``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001, clip_lr: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not group["lars_exclude"]:
                    wd = group["weight_decay"]
                    w_norm = torch.linalg.vector_norm(p)
                    if group["clip_lr"]:
                        g_norm = torch.linalg.vector_norm(d)
                        local = group["eta"] * w_norm / (g_norm + wd * w_norm)
                        trust = torch.where((w_norm > 0) & (g_norm > 0), torch.clamp(local / group["lr"], max=1.0), torch.ones_like(w_norm)) if group["lr"] > 0 else torch.ones_like(w_norm)
                        d = d.add(p, alpha=wd)
                    else:
                        d = d.add(p, alpha=wd)
                        g_norm = torch.linalg.vector_norm(d)
                        trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    d = d.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(d).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    """``cfg`` is an OptimConfig; group learning rates are set by the loop every step."""
    if not groups:
        raise ReprlabError("no trainable parameters: every parameter is frozen")
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "lars":
        return LARS(groups, lr=cfg.lr, momentum=cfg.momentum, eta=cfg.lars_eta, clip_lr=cfg.lars_clip_lr)
    raise ReprlabError(f"unknown optimiser {cfg.name!r}; expected sgd, adamw or lars")
