"""The loop on synthetic in-memory data (fast, no real data): checkpoints describe themselves,
best.pt stays consistent with last.pt across a kill, a torn metrics line or a changed config on resume."""

import json

import pytest
import torch

from helpers_toy import MEAN, toy_cfg, toy_splits
from reprlab.errors import ReprlabError
from reprlab.eval.backbones import load_backbone
from reprlab.methods.supervised import Supervised
from reprlab.train.loop import checkpoint_step, fit
from reprlab.train.rundir import RunDir


def _fit(cfg, tmp_path, name="r"):
    run = RunDir(tmp_path / name)
    run.open(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    method = Supervised(cfg, toy_splits(), torch.device("cpu"))
    res = fit(cfg, method, method.splits.train, run, torch.device("cpu"))
    run.unlock()
    return run, res


def test_best_pt_is_restored_when_killed_between_last_and_best(tmp_path):
    cfg = toy_cfg(tmp_path)
    run, res = _fit(cfg, tmp_path)
    assert checkpoint_step(run.best) == res.best["step"]
    last = torch.load(run.last, weights_only=False)
    # a kill after last.pt (recording a new best at its own step) and before best.pt was copied
    last["best"] = {**last["best"], "step": last["step"]}
    torch.save(last, run.last)
    stale = torch.load(run.best, weights_only=False)
    stale["step"] = 1
    torch.save(stale, run.best)
    _fit(cfg, tmp_path)  # resumes at the end: nothing to train, best.pt repaired
    assert checkpoint_step(run.best) == last["step"]


def test_checkpoint_of_a_finetune_describes_the_loaded_backbone(tmp_path):
    cfg = toy_cfg(tmp_path)
    run, _ = _fit(cfg, tmp_path, "pre")
    # fine-tune over it with a config that names another architecture: the checkpoint must
    # still describe the width-4 backbone and its normalisation
    ft_cfg = toy_cfg(tmp_path, "model.kwargs.width=64", f'eval.backbone="{run.last}"')
    bb = load_backbone(str(run.last), ft_cfg, (0, 0, 0), (1, 1, 1))
    ft_run = RunDir(tmp_path / "ft")
    ft_run.open(ft_cfg, torch.device("cpu"))
    ft = Supervised(ft_cfg, toy_splits(), torch.device("cpu"), backbone=bb, mode="full")
    fit(ft_cfg, ft, ft.splits.train, ft_run, torch.device("cpu"))
    ft_run.unlock()
    ckpt = torch.load(ft_run.last, weights_only=False)
    assert ckpt["model_kwargs"] == {"width": 4}
    assert ckpt["data_mean"] == pytest.approx(list(MEAN))
    again = load_backbone(str(ft_run.last), ft_cfg, (0, 0, 0), (1, 1, 1))  # loads back as a backbone
    assert again.model.num_features == 32


def test_resume_tolerates_a_torn_metrics_line(tmp_path):
    cfg = toy_cfg(tmp_path, "train.epochs=1")
    run, _ = _fit(cfg, tmp_path)
    lines = run.metrics_file.read_text().splitlines()
    run.metrics_file.write_text("\n".join(lines) + '\n{"step": 9, "tra')  # killed mid-write
    cfg2 = toy_cfg(tmp_path, "train.epochs=2")
    with pytest.raises(ReprlabError, match=r"another config \(train\.epochs: recorded 1, now 2\)"):
        _fit(cfg2, tmp_path)
    # same config, torn tail: the resume drops it and continues
    _fit(cfg, tmp_path)
    rows = [json.loads(x) for x in run.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in rows] == [int(json.loads(x)["step"]) for x in lines]


def test_resume_refuses_a_config_that_dropped_a_key(tmp_path):
    cfg = toy_cfg(tmp_path, "train.epochs=1", "model.kwargs.zero_init_residual=true")
    _fit(cfg, tmp_path)
    (tmp_path / "r" / "result.json").unlink(missing_ok=True)
    with pytest.raises(ReprlabError, match="zero_init_residual"):
        _fit(toy_cfg(tmp_path, "train.epochs=1"), tmp_path)  # same run dir, architecture argument gone
