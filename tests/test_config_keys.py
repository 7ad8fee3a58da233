"""The keys a run reads: what config.toml and `reprlab config --method` show, and that run
directories compare on those keys only, including config.toml files that record every key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from reprlab.config import dumps_toml, flatten, load_config, to_dict
from reprlab.config_keys import read_dict
from reprlab.errors import ReprlabError
from reprlab.train.rundir import config_differences

ROOT = Path(__file__).resolve().parents[1]


def test_a_byol_run_records_no_supervised_augmentation_and_no_schedule_it_did_not_choose():
    cfg = load_config("configs/pretrain/byol_cifar100.toml")
    keys = flatten(read_dict(cfg))
    assert not [k for k in keys if k.startswith(("aug.", "eval."))]
    assert "schedule.milestones" not in keys and "optim.betas" not in keys and "optim.backbone_lr_mult" not in keys
    assert cfg.optim.name == "lars" and "optim.lars_eta" in keys and "schedule.min_lr_ratio" in keys
    assert "method.momentum.start" in keys and "views.view2.solarize_prob" in keys
    assert len(keys) < len(flatten(to_dict(cfg))) - 20


def test_a_supervised_run_keeps_its_augmentation_and_drops_views():
    keys = flatten(read_dict(load_config("configs/supervised/resnet18_scratch.toml")))
    assert "aug.mix.cutmix_prob" in keys and "eval.resolution" in keys and "optim.backbone_lr_mult" in keys
    assert not [k for k in keys if k.startswith("views")]


def test_unknown_keys_are_still_rejected_for_every_method():
    with pytest.raises(ReprlabError, match="aug.flipp"):
        load_config("configs/pretrain/byol_cifar100.toml", ["aug.flipp=false"])
    with pytest.raises(ReprlabError, match="schedule.milestone"):
        load_config("configs/pretrain/byol_cifar100.toml", ["schedule.milestone=[1.0]"])


def test_run_dirs_compare_on_read_keys_whether_config_toml_holds_every_key_or_only_those():
    cfg = load_config("configs/pretrain/byol_cifar100.toml")
    full = tomllib.loads(dumps_toml(to_dict(cfg)))  # a config.toml written before the filter
    read = tomllib.loads(dumps_toml(read_dict(cfg)))  # one written now
    for recorded in (full, read):
        assert config_differences(recorded, cfg) == []
        # a key BYOL does not read changes nothing of the run; one it reads does
        assert config_differences(recorded, load_config("configs/pretrain/byol_cifar100.toml", ["aug.flip=false", "schedule.gamma=0.5"])) == []
        diff = config_differences(recorded, load_config("configs/pretrain/byol_cifar100.toml", ["views.view1.flip_prob=0.2"]))
        assert [k for k, _, _ in diff] == ["views.view1.flip_prob"]
    # choosing another schedule brings its keys in: they differ from nothing recorded only at their defaults
    diff = config_differences(read, load_config("configs/pretrain/byol_cifar100.toml", ['schedule.name="multistep"', "schedule.gamma=0.5"]))
    assert [k for k, _, _ in diff] == ["schedule.gamma", "schedule.name"]


def test_reprlab_config_for_byol_lists_no_aug_section():
    out = subprocess.run([sys.executable, "-m", "reprlab", "config", "--method", "byol"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    keys = [line.split()[0] for line in out.stdout.splitlines()]
    assert out.returncode == 0 and "method.momentum" in keys and "views.view1.size" in keys
    assert not [k for k in keys if k.startswith(("aug.", "eval."))] and "optim.backbone_lr_mult" not in keys
    assert "optim.betas" in keys and "schedule.milestones" in keys  # documented for when that optimiser / schedule is chosen
    sup = subprocess.run([sys.executable, "-m", "reprlab", "config", "aug", "--method", "supervised"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert sup.returncode == 0 and "aug.mix.cutmix_prob" in sup.stdout
