import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from reprlab.train.optim import LARS, param_groups
from reprlab.train.schedule import lr_factor


def sched(**kw):
    base = dict(name="multistep", warmup_epochs=0.0, milestones=[2.0, 4.0], gamma=0.1, min_lr_ratio=0.0)
    return SimpleNamespace(**{**base, **kw})


def test_multistep_and_warmup():
    s = sched(warmup_epochs=1.0)
    assert lr_factor(0, 60, 10, s) == pytest.approx(0.1)
    assert lr_factor(9, 60, 10, s) == pytest.approx(1.0)
    assert lr_factor(19, 60, 10, s) == 1.0
    assert lr_factor(20, 60, 10, s) == pytest.approx(0.1)
    assert lr_factor(40, 60, 10, s) == pytest.approx(0.01)


def test_cosine_endpoints_and_midpoint():
    s = sched(name="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, 100, 10, s) == pytest.approx(1.0)
    assert lr_factor(50, 100, 10, s) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, 10, s) == pytest.approx(0.1)


def test_no_decay_on_norms_and_biases():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = param_groups(((n, p, 1.0) for n, p in m.named_parameters()), 0.05, True)
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(m[0].weight), id(m[3].weight)}
    groups = param_groups(((n, p, 1.0) for n, p in m.named_parameters()), 0.05, False)
    assert all(g["weight_decay"] == 0.05 for g in groups)


def test_lars_matches_a_slow_reference():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    opt = LARS([{"params": [w], "weight_decay": 1e-2, "lars_exclude": False}, {"params": [b], "weight_decay": 0.0, "lars_exclude": True}], lr=0.5, momentum=0.9, eta=0.02)
    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    buf_w, buf_b = None, None
    for it in range(3):
        gw, gb = torch.randn(5, 3), torch.randn(5)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        d = gw + 1e-2 * w_ref
        d = d * (0.02 * w_ref.norm() / d.norm())
        buf_w = d if buf_w is None else 0.9 * buf_w + d
        buf_b = gb if buf_b is None else 0.9 * buf_b + gb
        w_ref, b_ref = w_ref - 0.5 * buf_w, b_ref - 0.5 * buf_b
    assert torch.allclose(w, w_ref, atol=1e-6) and torch.allclose(b, b_ref, atol=1e-6)
