"""What the loop promises a method: the step context, the hooks at their fixed points, extra
scalars logged under train/ (averaged per logging interval), method state in the checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits
from reprlab.methods.base import Method
from reprlab.train.loop import fit
from reprlab.train.rundir import RunDir


class Probe(Method):
    """A linear model on mean pixel values that records what the loop does around it."""

    name = "probe-method"

    def __init__(self, cfg, splits, device):
        super().__init__(cfg, splits, device)
        self.backbone = nn.Linear(3, 4)
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))
        self.events: list[tuple] = []

    def training_step(self, images, labels, generator, ctx):
        self.events.append(("step", ctx.step, ctx.epoch, ctx.total_steps))
        x = images.float().mean((2, 3)) / 255
        loss = nn.functional.cross_entropy(self.backbone(x), labels)
        return loss, {"double": torch.tensor(2.0 * ctx.step), "host": float(ctx.step)}

    def before_optimizer_step(self, ctx):
        g = self.backbone.weight.grad
        self.events.append(("before", ctx.step, g is not None and bool(g.abs().sum() > 0)))
        self._w = self.backbone.weight.detach().clone()

    def after_optimizer_step(self, ctx):
        self.events.append(("after", ctx.step, not torch.equal(self._w, self.backbone.weight)))
        self.steps_seen += 1

    def evaluate(self, split, epoch):
        return {"val/acc1": float(epoch)}


def _toy(tmp_path, *extra):
    g = torch.Generator().manual_seed(0)
    s = ImageSet(torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(40) % 4, list("abcd"))
    splits = Splits(s, s.subset(torch.arange(8)), None, "toy", (0.5,) * 3, (0.25,) * 3, {})
    cfg = load_config(None, ["train.batch_size=10", "train.epochs=2", "train.log_every_steps=3", "train.precision=fp32", "train.progress=false",
                             "optim.momentum=0.0", "schedule.name=\"constant\"", f'run.out_dir="{tmp_path}"', *extra])
    return cfg, splits


def test_hooks_run_in_order_with_the_step_context_and_extras_are_logged(tmp_path):
    cfg, splits = _toy(tmp_path)
    m = Probe(cfg, splits, torch.device("cpu"))
    run = RunDir(tmp_path / "r")
    run.open(cfg, torch.device("cpu"))
    try:
        fit(cfg, m, splits.train, run, torch.device("cpu"))
    finally:
        run.unlock()
    expected = []
    for step in range(8):  # 4 steps per epoch, 2 epochs
        expected += [("step", step, step // 4, 8), ("before", step, True), ("after", step, True)]
    assert m.events == expected
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    # logging at steps 3, 4 (end of epoch), 6, 8: the mean over each interval of each extra
    assert [r["step"] for r in train] == [3, 4, 6, 8]
    assert [r["train/double"] for r in train] == [2.0, 6.0, 9.0, 13.0]
    assert [r["train/host"] for r in train] == [1.0, 3.0, 4.5, 6.5]
    ckpt = torch.load(run.last, weights_only=False)
    assert int(ckpt["method"]["steps_seen"]) == 8  # method buffers travel with the checkpoint


def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path):
    from reprlab.errors import NonFiniteLossError

    class BadLoss(Probe):
        def training_step(self, images, labels, generator, ctx):
            loss, extra = super().training_step(images, labels, generator, ctx)
            return (loss * float("nan") if ctx.step == 4 else loss), extra

    cfg, splits = _toy(tmp_path)
    run = RunDir(tmp_path / "bad")
    run.open(cfg, torch.device("cpu"))
    try:
        with pytest.raises(NonFiniteLossError, match="non-finite loss at step 5"):
            fit(cfg, BadLoss(cfg, splits, torch.device("cpu")), splits.train, run, torch.device("cpu"))
    finally:
        run.unlock()
    assert torch.load(run.last, weights_only=False)["step"] == 4  # the end-of-epoch-1 checkpoint is kept
