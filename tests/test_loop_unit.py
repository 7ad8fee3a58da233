"""The loop on synthetic in-memory data (fast, no real data): checkpoints describe themselves,
best.pt stays consistent with last.pt across a kill, bad devices are one-line errors."""

import json

import pytest
import torch

from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits
from reprlab.errors import ReprlabError
from reprlab.eval.backbones import load_backbone
from reprlab.methods.supervised import Supervised
from reprlab.runtime import resolve_device
from reprlab.train.loop import checkpoint_step, fit
from reprlab.train.rundir import RunDir

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _splits(n=256, classes=4):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    s = ImageSet(x, y, [str(i) for i in range(classes)])
    return Splits(s, s.subset(torch.arange(64)), s.subset(torch.arange(64, 128)), "toy", MEAN, STD)


def _cfg(tmp_path, *extra):
    return load_config(None, ["model.kwargs.width=4", "train.batch_size=32", "train.epochs=2", "train.progress=false", "train.log_every_steps=4",
                              "optim.lr=0.05", "model.channels_last=false", f'run.out_dir="{tmp_path}"', *extra])


def _fit(cfg, tmp_path, name="r"):
    run = RunDir(tmp_path / name)
    run.open(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    method = Supervised(cfg, _splits(), torch.device("cpu"))
    res = fit(cfg, method, run, torch.device("cpu"))
    run.unlock()
    return run, res


def test_best_pt_is_restored_when_killed_between_last_and_best(tmp_path):
    cfg = _cfg(tmp_path)
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
    cfg = _cfg(tmp_path)
    run, _ = _fit(cfg, tmp_path, "pre")
    # fine-tune over it with a config that names another architecture: the checkpoint must
    # still describe the width-4 backbone and its normalisation
    ft_cfg = _cfg(tmp_path, "model.kwargs.width=64", f'eval.backbone="{run.last}"')
    bb = load_backbone(str(run.last), ft_cfg, (0, 0, 0), (1, 1, 1))
    ft_run = RunDir(tmp_path / "ft")
    ft_run.open(ft_cfg, torch.device("cpu"))
    fit(ft_cfg, Supervised(ft_cfg, _splits(), torch.device("cpu"), backbone=bb, mode="full"), ft_run, torch.device("cpu"))
    ft_run.unlock()
    ckpt = torch.load(ft_run.last, weights_only=False)
    assert ckpt["model_kwargs"] == {"width": 4}
    assert ckpt["data_mean"] == pytest.approx(list(MEAN))
    again = load_backbone(str(ft_run.last), ft_cfg, (0, 0, 0), (1, 1, 1))  # loads back as a backbone
    assert again.model.num_features == 32


def test_resume_tolerates_a_torn_metrics_line(tmp_path):
    cfg = _cfg(tmp_path, "train.epochs=1")
    run, _ = _fit(cfg, tmp_path)
    lines = run.metrics_file.read_text().splitlines()
    run.metrics_file.write_text("\n".join(lines) + '\n{"step": 9, "tra')  # killed mid-write
    cfg2 = _cfg(tmp_path, "train.epochs=2")
    with pytest.raises(ReprlabError, match=r"another config \(train\.epochs: recorded 1, now 2\)"):
        _fit(cfg2, tmp_path)
    # same config, torn tail: the resume drops it and continues
    _fit(cfg, tmp_path)
    rows = [json.loads(x) for x in run.metrics_file.read_text().splitlines()]
    assert [r["step"] for r in rows] == [int(json.loads(x)["step"]) for x in lines]


def test_bad_device_is_a_one_line_error():
    with pytest.raises(ReprlabError, match="train.device='gpu'"):
        resolve_device("gpu")


def test_cached_probe_without_test_never_touches_the_test_split(tmp_path):
    from reprlab.eval.backbones import Backbone
    from reprlab.eval.probe import cached_probe
    from reprlab.models import create_model

    splits = _splits()
    splits.test.images = None  # any access to the test images would now fail
    bb = Backbone(create_model("resnet18", num_classes=0, width=4), MEAN, STD, 16, "random-init", {})
    out = cached_probe(bb, splits, _cfg(tmp_path, "train.eval_test=false", "eval.max_iter=10"), torch.device("cpu"))
    assert "test" not in out and "val" in out


def test_feature_cache_ignores_features_of_another_configuration(tmp_path):
    from reprlab.eval.probe import FeatureCache

    feats = {"train": torch.ones(2, 3)}
    FeatureCache(tmp_path / "f.pt", {"resolution": 32}).save(feats)
    assert torch.equal(FeatureCache(tmp_path / "f.pt", {"resolution": 32}).load()["train"], feats["train"])
    assert FeatureCache(tmp_path / "f.pt", {"resolution": 224}).load() is None


def test_resume_refuses_a_config_that_dropped_a_key(tmp_path):
    cfg = _cfg(tmp_path, "train.epochs=1", "model.kwargs.zero_init_residual=true")
    _fit(cfg, tmp_path)
    (tmp_path / "r" / "result.json").unlink(missing_ok=True)
    with pytest.raises(ReprlabError, match="zero_init_residual"):
        _fit(_cfg(tmp_path, "train.epochs=1"), tmp_path)  # same run dir, architecture argument gone
