"""The online linear probe of self-supervised pretraining leaves pretraining bit for bit as it
was: the same backbone, optimiser state, generator states and logged train/loss after N steps of
the real loop in float32 with the probe on and off (gradient clipping over every parameter group
on, so a probe parameter that leaked into the shared optimiser would change the clipping)."""

from __future__ import annotations

import json

import pytest
import torch

from helpers_methods import tiny_cfg
from reprlab.data.types import Splits
from reprlab.registry import METHODS
from reprlab.train.loop import fit
from reprlab.train.rundir import RunDir, load_checkpoint


def _small(cifar) -> Splits:
    """48 training and 200 validation images of real CIFAR-100 (the kNN monitor reuses them)."""
    return Splits(cifar.train.subset(torch.arange(48)), cifar.val.subset(torch.arange(200)), None, "cifar100", cifar.mean, cifar.std, cifar.info)


def _pretrain(name: str, splits: Splits, tmp_path, probe: bool):
    cfg = tiny_cfg(name, tmp_path / str(probe), "train.deterministic=true", "train.batch_size=16", "train.epochs=2", "train.max_steps=5",
                   "train.log_every_steps=1", "train.progress=false", "optim.grad_clip=0.5", f"method.online_probe={str(probe).lower()}")
    torch.manual_seed(0)
    method = METHODS.get(name)(cfg, splits, torch.device("cpu"))
    run = RunDir(tmp_path / str(probe) / "run")
    run.open(cfg, torch.device("cpu"))
    try:
        fit(cfg, method, splits.train, run, torch.device("cpu"))
    finally:
        run.unlock()
    rows = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    return method, load_checkpoint(run.last), rows


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_pretraining_is_bit_identical_with_the_online_probe_on_and_off(name, cifar, tmp_path):
    splits = _small(cifar)
    on, ckpt_on, rows_on = _pretrain(name, splits, tmp_path, True)
    off, ckpt_off, rows_off = _pretrain(name, splits, tmp_path, False)
    state_on = {k: v for k, v in ckpt_on["method"].items() if not k.startswith("online_probe.")}
    assert state_on.keys() == ckpt_off["method"].keys() and any(k.startswith("online_probe.") for k in ckpt_on["method"])
    for k, v in ckpt_off["method"].items():
        assert torch.equal(state_on[k], v), k  # backbone, heads, EMA targets, BN statistics
    for a, b in zip(ckpt_on["optimizer"]["state"].values(), ckpt_off["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert torch.equal(ckpt_on["aug_generator"], ckpt_off["aug_generator"]) and torch.equal(ckpt_on["rng"]["torch"], ckpt_off["rng"]["torch"])
    assert [r.get("train/loss") for r in rows_on] == [r.get("train/loss") for r in rows_off]
    assert [r.get("knn/acc1") for r in rows_on] == [r.get("knn/acc1") for r in rows_off]
    # the probe itself: trained (its loss logged every step), scored on validation, state in the checkpoint
    assert sum("train/online_loss" in r for r in rows_on) == 5 and not any("train/online_loss" in r or "online/val_acc1" in r for r in rows_off)
    acc = [r["online/val_acc1"] for r in rows_on if "online/val_acc1" in r]
    assert len(acc) == 1 and 0.0 <= acc[0] <= 100.0
    assert ckpt_on["method"]["online_probe.weight_velocity"].abs().sum() > 0
    assert off.online_probe is None and not any(n.startswith("online_probe.") for n, _, _ in on.named_trainable())
