"""reprlab/train/optim.py: no weight decay on norms and biases, LARS against slow references, and a
scheduled weight decay that reaches the optimiser's groups."""

import pytest
import torch
import torch.nn as nn

from reprlab.train.optim import LARS, param_groups


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


def test_weight_decay_schedule_reaches_the_optimizer(tmp_path):
    # The loop applies a scheduled optim.weight_decay to the decaying groups, every step.
    import json

    from reprlab.config import load_config
    from reprlab.data.types import ImageSet, Splits
    from reprlab.methods.supervised import Supervised
    from reprlab.train.loop import fit
    from reprlab.train.rundir import RunDir

    g = torch.Generator().manual_seed(0)
    s = ImageSet(torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(64) % 4, [str(i) for i in range(4)])
    splits = Splits(s, s.subset(torch.arange(8)), None, "toy", (0.5,) * 3, (0.25,) * 3, {})
    cfg = load_config(None, ["model.kwargs.width=4", "train.batch_size=16", "train.epochs=2", "train.precision=fp32", "train.progress=false",
                             'optim.weight_decay={start = 0.0, end = 0.7, shape = "linear"}', f'run.out_dir="{tmp_path}"', "train.log_every_steps=1"])
    run = RunDir(tmp_path / "r")
    run.open(cfg, torch.device("cpu"))
    try:
        fit(cfg, Supervised(cfg, splits, torch.device("cpu")), splits.train, run, torch.device("cpu"))
    finally:
        run.unlock()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    wd = [r["train/weight_decay"] for r in rows if "train/weight_decay" in r]
    assert wd == pytest.approx([0.7 * k / 7 for k in range(8)])
    groups = torch.load(run.last, weights_only=False)["optimizer"]["param_groups"]
    assert sorted(round(g["weight_decay"], 9) for g in groups) == [0.0, 0.7]  # norms and biases never decay


def test_lars_clip_lr_caps_each_tensor_step_at_the_learning_rate():
    # solo-learn's CIFAR LARS: local = eta |w| / (|g| + wd |w|), step = min(local, lr) * (g + wd w)
    torch.manual_seed(0)
    big, small = nn.Parameter(torch.randn(8, 4) * 10), nn.Parameter(torch.randn(8, 4) * 0.01)
    g_big, g_small = torch.randn(8, 4) * 0.01, torch.randn(8, 4) * 10
    lr, eta, wd = 0.5, 0.02, 1e-4
    opt = LARS([{"params": [big, small], "lars_exclude": False}], lr=lr, momentum=0.0, weight_decay=wd, eta=eta, clip_lr=True)
    before = [big.detach().clone(), small.detach().clone()]
    big.grad, small.grad = g_big.clone(), g_small.clone()
    opt.step()
    for p, w, g in zip((big, small), before, (g_big, g_small)):
        local = eta * w.norm() / (g.norm() + wd * w.norm())
        expected = w - min(local.item(), lr) * (g + wd * w)
        assert torch.allclose(p.detach(), expected, atol=1e-6)
    assert eta * before[0].norm() / (g_big.norm() + wd * before[0].norm()) > lr  # the cap was active for one tensor
