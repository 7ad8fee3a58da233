"""result.json's ``budget``: what a run trained against its recipe (the config file it was started
from, before command-line overrides), and for a probe the budget of its backbone's pretraining.
On the real CIFAR-100 at a toy budget: a 1000-epoch BYOL recipe run for 1 epoch of 2 steps."""

import json

import pytest

from reprlab.cli import main

pytestmark = pytest.mark.realdata

TINY = ["model.kwargs.width=8", "train.batch_size=64", "train.progress=false", "train.eval_batch_size=1000", "train.num_threads=2",
        "data.fraction=0.02", "data.val_size=500"]


def test_a_run_records_its_recipe_budget_and_a_probe_its_backbones(data_root, cache_root, tmp_path):
    common = ["--data-root", str(data_root)]
    out = [f'run.out_dir="{tmp_path}"', f'data.cache_dir="{cache_root}"']
    assert main([*common, "pretrain", "--config", "configs/pretrain/byol_cifar100.toml", *TINY, *out, 'run.name="byol"',
                 "train.epochs=1", "train.max_steps=2", "method.knn_bank_size=500", "schedule.warmup_epochs=0.0"]) == 0
    pre = json.loads((tmp_path / "byol" / "result.json").read_text())
    # the recipe says 1000 epochs; the overrides (train.epochs=1, max_steps=2) are what the run did
    assert pre["budget"] == {"epochs": 1, "steps": 2, "recipe": "configs/pretrain/byol_cifar100.toml", "recipe_epochs": 1000,
                             "recipe_steps": None, "backbone": None}
    assert main([*common, "probe", "--backbone", str(tmp_path / "byol"), *TINY, *out, 'run.name="probe"', "eval.l2_grid=[1e-3]",
                 "eval.max_iter=20"]) == 0
    probe = json.loads((tmp_path / "probe" / "result.json").read_text())
    # the cached probe trains no epochs; its backbone's budget is the pretraining run's record
    assert probe["budget"]["epochs"] is None and probe["budget"]["recipe"] is None
    assert probe["budget"]["backbone"] == pre["budget"]
    # a fine-tune started without --config records the command's default recipe, and its backbone's
    assert main([*common, "finetune", "--backbone", str(tmp_path / "byol"), "--mode", "head", *TINY, *out, 'run.name="ft"',
                 "train.epochs=1", "train.max_steps=1", "schedule.warmup_epochs=0.0"]) == 0
    ft = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert ft["budget"]["recipe"] == "configs/finetune/resnet18.toml" and ft["budget"]["steps"] == 1
    assert ft["budget"]["recipe_epochs"] == _recipe_epochs("finetune/resnet18.toml") and ft["budget"]["backbone"] == pre["budget"]


def _recipe_epochs(name):
    import tomllib
    from pathlib import Path

    import reprlab

    return tomllib.loads((Path(reprlab.__file__).parent / "configs" / name).read_text())["train"]["epochs"]
