"""The method contract, checked for every registered self-supervised method on real CIFAR-100.

Each method must: declare a documented config and valid views; learn on a fixed batch (the loss
goes down over 30 updates through the loop's own train_step, hooks included); keep everything a
resume needs in its state_dict; and leave a checkpoint whose backbone `reprlab probe` and
`reprlab finetune` load. Method-specific mechanics (EMA formula, queue order, DINO's centre,
Sinkhorn marginals) are tested in tests/methods/test_<name>.py.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from helpers_methods import tiny_cfg, tiny_overrides
from reprlab.config import field_comments, load_config
from reprlab.errors import ReprlabError
from reprlab.methods.base import StepContext
from reprlab.methods.ssl import SSLMethod
from reprlab.registry import METHODS
from reprlab.train.loop import train_step

SSL = [n for n in METHODS.names() if issubclass(METHODS.get(n), SSLMethod)]


def test_every_ssl_method_is_registered_with_recipes():
    assert {"simclr", "byol"} <= set(SSL)
    for name in SSL:
        for source in ("cifar100", "tinyimagenet"):
            cfg = load_config(f"configs/pretrain/{name}_{source}.toml")
            assert cfg.method.name == name and type(cfg.method) is METHODS.get(name).Config


@pytest.mark.parametrize("name", SSL)
def test_method_config_is_documented_and_views_valid(name):
    cls = METHODS.get(name)
    comments = field_comments(cls.Config)
    assert not [f.name for f in dataclasses.fields(cls.Config) if not comments.get(f.name)]
    views = cls.default_views()
    assert views and all(v.validate() is None for v in views.values())


@pytest.fixture(scope="module")
def fixed_batch(cifar):
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(cifar.train), generator=g)[:64]
    return cifar, cifar.train.images[idx], cifar.train.labels[idx]


def _steps(method, images, labels, n: int, seed: int = 0) -> list[float]:
    params = [p for _, p, _ in method.named_trainable()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    for g in opt.param_groups:
        g["lars_exclude"] = True
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    gen = torch.Generator().manual_seed(seed)
    method.set_train_mode()
    out = []
    for step in range(n):
        loss, extra = train_step(method, opt, scaler, images, labels, gen, StepContext(step, n, n))
        assert all(math.isfinite(float(v)) for v in extra.values())
        out.append(loss.item())
    return out


@pytest.mark.realdata
@pytest.mark.parametrize("name", SSL)
def test_loss_is_finite_and_falls_on_a_fixed_batch(name, fixed_batch):
    splits, images, labels = fixed_batch
    torch.manual_seed(0)
    method = METHODS.get(name)(tiny_cfg(name), splits, torch.device("cpu"))
    losses = _steps(method, images, labels, 30)
    assert all(math.isfinite(v) for v in losses), losses
    # step 0 is left out: MoCo's queue starts as random unit vectors, which are easy negatives
    first, last = sum(losses[1:6]) / 5, sum(losses[-5:]) / 5
    assert last < first, f"{name}: loss did not fall over 30 steps on a fixed batch: {first:.4f} -> {last:.4f}"


@pytest.mark.realdata
@pytest.mark.parametrize("name", SSL)
def test_state_dict_carries_everything_a_resume_needs(name, fixed_batch):
    # Two updates, save, two more; a fresh instance loaded from the save repeats the last two
    # exactly: queues, centres and EMA targets are all in the state_dict.
    splits, images, labels = fixed_batch
    torch.manual_seed(0)
    cls, cfg = METHODS.get(name), tiny_cfg(name)
    a = cls(cfg, splits, torch.device("cpu"))
    _steps(a, images, labels, 2)
    saved = {k: v.clone() for k, v in a.state_dict().items()}
    torch.manual_seed(1)
    b = cls(cfg, splits, torch.device("cpu"))
    b.load_state_dict(saved)
    torch.manual_seed(2)
    la = _steps(a, images, labels, 2, seed=5)
    torch.manual_seed(2)
    lb = _steps(b, images, labels, 2, seed=5)
    assert la == lb
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


@pytest.mark.realdata
@pytest.mark.parametrize("name", SSL)
def test_pretrained_backbone_loads_into_probe_and_finetune(name, tmp_path, data_root):
    from reprlab.data.registry import load_splits
    from reprlab.eval.backbones import load_backbone
    from reprlab.methods.supervised import Supervised
    from reprlab.train.task import execute

    cfg = tiny_cfg(name, tmp_path, "train.max_steps=3", "train.batch_size=32", "train.epochs=1", f'data.root="{data_root}"', "train.progress=false", 'run.name="p"')
    result = execute(cfg, "pretrain")
    assert result["steps"] == 3
    ckpt = torch.load(tmp_path / "p" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    prefix = ckpt["backbone_prefix"]
    bb = load_backbone(str(tmp_path / "p"), cfg, (0.5,) * 3, (0.25,) * 3)
    assert bb.info["method"] == name
    for k, v in bb.model.state_dict().items():
        assert torch.equal(v, ckpt["method"][prefix + k]), k
    splits = load_splits(cfg.data)
    ft = Supervised(load_config(None, ["train.precision=fp32"]), splits, torch.device("cpu"), backbone=bb, mode="full")
    loss, _ = ft.training_step(splits.train.images[:16], splits.train.labels[:16], torch.Generator().manual_seed(0), StepContext(0, 1, 1))
    assert math.isfinite(loss.item())


@pytest.mark.parametrize("name", ["simclr", "byol", "supervised"])
def test_a_compiled_method_keeps_its_state_dict_keys(name):
    # The compiled forward is kept out of the module tree: checkpoints hold the backbone once,
    # and a run resumes across model.compile=true/false (the loop loads before it compiles).
    from reprlab.data.types import ImageSet, Splits

    s = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.arange(4), list("abcd"))
    splits = Splits(s, s, None, "cifar100", (0.5,) * 3, (0.25,) * 3, {})
    over = ["model.kwargs.width=4"] if name == "supervised" else tiny_overrides(name)[:2]
    cfg = load_config(None, [o for o in over if not o.startswith("method.knn")])
    a, b = (METHODS.get(name)(cfg, splits, torch.device("cpu")) for _ in range(2))
    keys = list(a.state_dict())
    assert not [k for k in keys if k.startswith(("_encode", "_forward"))]
    b.compile()
    assert list(b.state_dict()) == keys
    b.load_state_dict(a.state_dict())  # strict
    legacy = {**a.state_dict(), **{"_encode." + k[len("backbone."):]: v for k, v in a.state_dict().items() if k.startswith("backbone.")}}
    b.load_state_dict(legacy)  # checkpoints of earlier versions carried the alias too


@pytest.mark.parametrize("name", ["byol", "mocov2", "dino"])
def test_an_ema_momentum_outside_0_1_is_refused_at_any_point_of_its_schedule(name):
    with pytest.raises(ReprlabError, match=r"config key 'method.momentum': expected values in \[0, 1\]"):
        load_config(f"configs/pretrain/{name}_cifar100.toml", ["method.momentum={start=0.99, end=1.5}"])
    load_config(f"configs/pretrain/{name}_cifar100.toml", ["method.momentum={start=0.9, end=1.0}"])


@pytest.mark.realdata
def test_dino_takes_the_largest_crops_as_global_whatever_the_views_are_named(cifar):
    from helpers_methods import tiny_method

    m = tiny_method("dino", cifar, "views.local.count=2")
    assert m.n_global == 2 and len(m.views) == 4
    with pytest.raises(ReprlabError, match=r"'views.global2.size' = 16: method 'dino' needs one crop size for views global1, global2"):
        tiny_method("dino", cifar, "views.global2.size=16")  # then only one crop would be of the largest size


def test_a_method_class_must_carry_the_config_registered_for_its_name():
    """The torch-free [method] dataclasses (methods/configs.py) and the method classes are two
    registries of one set of names: every class's Config is the dataclass of its name, and a
    class that brings another is refused when it registers."""
    from reprlab.methods.base import Method, register_method
    from reprlab.registry import METHOD_CONFIGS, METHODS

    assert METHOD_CONFIGS.names() == METHODS.names()
    for name in METHODS.names():
        assert METHODS.get(name).Config is METHOD_CONFIGS.get(name), name
        assert METHODS.get(name).default_views() == METHOD_CONFIGS.get(name).default_views(), name
    with pytest.raises(ValueError, match="method 'byol': its Config MethodConfig is not the \\[method\\] dataclass registered for it \\(BYOLConfig\\)"):
        register_method("byol")(type("NotBYOL", (Method,), {}))
    assert METHODS.get("byol").__name__ == "BYOL"  # the refused class did not replace it
