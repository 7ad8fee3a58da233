"""The linear protocol guards itself: frozen is verified bit for bit; L2 is chosen on val."""

import json

import pytest
import torch

from helpers_toy import MEAN as TOY_MEAN, STD as TOY_STD, toy_cfg, toy_splits
from reprlab.cli import main
from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits
from reprlab.methods.base import StepContext
from reprlab.errors import ReprlabError
from reprlab.eval import probe as probe_mod
from reprlab.eval.backbones import Backbone
from reprlab.eval.probe import cached_probe, fit_logreg
from reprlab.methods.supervised import Supervised
from reprlab.models import create_model

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _splits(n=240, classes=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    # class-dependent colour so that a random conv net's features are linearly informative
    y = torch.arange(n) % classes
    base = (y[:, None, None, None].float() * (200 / classes) + 20).expand(n, 3, 16, 16)
    x = (base + torch.randint(-20, 20, (n, 3, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)
    coarse = y // 2
    mk = lambda sl: ImageSet(x[sl], y[sl], [f"c{i}" for i in range(classes)], coarse[sl], [f"s{i}" for i in range(classes // 2)])
    return Splits(mk(slice(0, n // 2)), mk(slice(n // 2, 3 * n // 4)), mk(slice(3 * n // 4, n)), "toy", MEAN, STD)


def _backbone():
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=0, width=4)
    return Backbone(m, MEAN, STD, 16, "random-init", {"method": "none"})


def _cfg(*extra):
    return load_config(None, ["model.channels_last=false", "eval.max_iter=50", "train.eval_batch_size=64", *extra])


def test_cached_probe_reports_and_leaves_backbone_untouched():
    bb = _backbone()
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    out = cached_probe(bb, _splits(), _cfg(), torch.device("cpu"))
    assert out["frozen_verified"] and out["test"]["acc1"] > 50  # well above 1/6 chance
    assert set(out["test_per_class_acc1"]) == {f"c{i}" for i in range(6)}
    assert all(isinstance(v, float) for v in out["test"].values())
    assert out["test"]["superclass_acc1"] >= out["test"]["acc1"]
    assert [r["l2"] for r in out["l2_sweep"]] == sorted(_cfg().eval.l2_grid, reverse=True)
    assert out["l2"] == max(out["l2_sweep"], key=lambda r: (r["val_acc1"], r["l2"]))["l2"]
    assert all(torch.equal(before[k], v) for k, v in bb.model.state_dict().items())


def test_cached_probe_shows_progress_for_extraction_and_fitting_unless_turned_off(capsys):
    cached_probe(_backbone(), _splits(), _cfg("train.progress=true"), torch.device("cpu"))
    err = capsys.readouterr().err
    assert "features" in err and "fit" in err and "img" in err
    cached_probe(_backbone(), _splits(), _cfg("train.progress=false"), torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_cached_probe_fails_loudly_when_the_backbone_changes(monkeypatch):
    real = probe_mod.extract_features

    def leaky(model, *a, **k):
        model.train()  # the classic bug: BN in training mode updates its running statistics
        with torch.no_grad():
            model(torch.randn(8, 3, 16, 16))
        return real(model, *a, **k)

    monkeypatch.setattr(probe_mod, "extract_features", leaky)
    with pytest.raises(ReprlabError, match=r"frozen backbone was modified.*running_(mean|var)"):
        cached_probe(_backbone(), _splits(), _cfg(), torch.device("cpu"))


def test_logistic_regression_reaches_a_stationary_point():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    fit = fit_logreg(x, y, 3, l2=1e-2, max_iter=200)
    w, b = fit.weight.clone().requires_grad_(), fit.bias.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * 1e-2 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4


def test_head_only_training_keeps_backbone_and_bn_buffers_bit_identical():
    cfg = _cfg("train.batch_size=32")
    method = Supervised(cfg, _splits(), torch.device("cpu"), backbone=_backbone(), mode="head")
    method.snapshot_frozen()
    opt = torch.optim.SGD([p for _, p, _ in method.named_trainable()], lr=0.1)
    g = torch.Generator().manual_seed(0)
    method.set_train_mode()
    for _ in range(3):
        loss, _ = method.training_step(method.splits.train.images[:32], method.splits.train.labels[:32], g, StepContext(0, 3, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    method.verify_frozen()
    assert {n for n, _, _ in method.named_trainable()} == {"backbone.fc.weight", "backbone.fc.bias"}
    method.backbone.train()  # now BN statistics move: the check must notice
    method.training_step(method.splits.train.images[:32], method.splits.train.labels[:32], g, StepContext(0, 3, 1))
    with pytest.raises(ReprlabError, match="frozen backbone was modified"):
        method.verify_frozen()


@pytest.mark.realdata
def test_simclr_pretrain_then_probe_and_finetune_on_real_data(data_root, cache_root, tmp_path):
    common = ["--data-root", str(data_root)]
    tiny = ["model.kwargs.width=4", "train.progress=false", f'data.cache_dir="{cache_root}"', f'run.out_dir="{tmp_path}"', "train.num_threads=2"]
    assert main([*common, "pretrain", "--config", "configs/pretrain/simclr_cifar100.toml", *tiny, 'run.name="ssl"', "data.fraction=0.03",
                 "train.epochs=1", "train.batch_size=64", "method.knn_bank_size=2000", "method.proj_hidden_dim=64", "train.eval_batch_size=1000"]) == 0
    pre = json.loads((tmp_path / "ssl" / "result.json").read_text())
    assert pre["protocol"] == "pretrain" and pre["method"] == "simclr" and "test" not in pre and 1.0 < pre["val"]["knn_acc1"] < 100
    rows = [json.loads(x) for x in (tmp_path / "ssl" / "metrics.jsonl").read_text().splitlines()]
    assert any("knn/acc1" in r for r in rows) and any("train/loss" in r for r in rows)
    ckpt = tmp_path / "ssl" / "checkpoints" / "last.pt"
    assert main([*common, "probe", "--backbone", str(ckpt), *tiny, 'run.name="probe"', "eval.max_iter=30", "eval.l2_grid=[1e-3, 1e-5]"]) == 0
    res = json.loads((tmp_path / "probe" / "result.json").read_text())
    assert res["protocol"] == "linear-cached" and res["method"] == "simclr" and res["dataset"] == "cifar100" and res["fraction"] == 0.03
    assert res["frozen_verified"] and len(res["test_per_class_acc1"]) == 100 and 1.0 < res["test"]["acc1"] < 100
    # the numbers agree with each other: the selected checkpoint's kNN accuracy is the one logged at
    # its step and the best logged; CIFAR-100's test split has 100 images per class, so the overall
    # accuracy is the mean of the per-class ones
    knn = {r["step"]: r["knn/acc1"] for r in rows if "knn/acc1" in r}
    assert pre["val"]["knn_acc1"] == pytest.approx(knn[pre["best_checkpoint"]["step"]]) == pytest.approx(max(knn.values()))
    assert res["test"]["acc1"] == pytest.approx(sum(res["test_per_class_acc1"].values()) / 100, abs=0.01)
    assert main([*common, "finetune", "--backbone", str(ckpt), "--mode", "head", *tiny, 'run.name="ft"', "train.epochs=1", "train.max_steps=5",
                 "train.batch_size=64", "train.eval_batch_size=2000"]) == 0
    ft = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert ft["protocol"] == "finetune-head" and ft["backbone_source"] == "simclr" and ft["method"] == "simclr" and ft["steps"] == 5


def test_cached_probe_without_test_never_touches_the_test_split(tmp_path):
    from reprlab.eval.backbones import Backbone
    from reprlab.eval.probe import cached_probe
    from reprlab.models import create_model

    splits = toy_splits()
    splits.test.images = None  # any access to the test images would now fail
    bb = Backbone(create_model("resnet18", num_classes=0, width=4), TOY_MEAN, TOY_STD, 16, "random-init", {})
    out = cached_probe(bb, splits, toy_cfg(tmp_path, "train.eval_test=false", "eval.max_iter=10"), torch.device("cpu"))
    assert "test" not in out and "val" in out


def test_feature_cache_ignores_features_of_another_configuration(tmp_path):
    from reprlab.eval.probe import FeatureCache

    feats = {"train": torch.ones(2, 3)}
    FeatureCache(tmp_path / "f.pt", {"resolution": 32}).save(feats)
    assert torch.equal(FeatureCache(tmp_path / "f.pt", {"resolution": 32}).load()["train"], feats["train"])
    assert FeatureCache(tmp_path / "f.pt", {"resolution": 224}).load() is None
