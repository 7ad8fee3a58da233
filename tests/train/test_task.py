"""What train/task.py records: result.json names a kNN accuracy as such, and the resolved config
of a probe or fine-tuning run says which architecture was actually built."""

from __future__ import annotations

import tomllib
from types import SimpleNamespace

import pytest
import torch

from reprlab.cli import main
from reprlab.config import load_config
from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.train.loop import FitResult
from reprlab.train.task import assemble_result


def _method(selection_metric: str, name: str):
    bb = create_model("resnet18", num_classes=0, width=4)
    bb.eval()
    return SimpleNamespace(backbone=bb, selection_metric=selection_metric, name=name, input_size=32)


def test_a_self_supervised_pretraining_result_names_its_knn_accuracy(capsys):
    cfg = load_config(None, ['method.name="simclr"', "train.epochs=1"])
    fit = FitResult(step=5, epochs_done=1, best={"metric": "knn/acc1", "value": 12.5, "step": 5, "val": {"knn/acc1": 12.5}})
    result = assemble_result(cfg, "pretrain", "ssl", _method("knn/acc1", "simclr"), fit, {}, {}, {"knn/acc1": 12.5}, {})
    assert result["val"] == {"knn_acc1": 12.5}
    assert result["best_checkpoint"]["metric"] == "knn/acc1" and result["best_checkpoint"]["val"] == {"knn_acc1": 12.5}
    from reprlab.commands._common import print_result

    print_result(result)
    assert '"knn_acc1": 12.5' in capsys.readouterr().out


def test_a_supervised_result_keeps_val_acc1():
    cfg = load_config(None, ["train.epochs=1"])
    fit = FitResult(step=5, epochs_done=1, best={"metric": "val/acc1", "value": 20.0, "step": 5, "val": {"val/acc1": 20.0, "val/acc5": 40.0}})
    result = assemble_result(cfg, "train", "sup", _method("val/acc1", "supervised"), fit, {"val/acc1": 20.0}, {}, {"val/acc1": 20.0, "val/acc5": 40.0}, {})
    assert result["val"] == {"acc1": 20.0, "acc5": 40.0}


def _checkpoint(path, width=8):
    bb = create_model("resnet18", num_classes=0, width=width)
    torch.save({"method": {f"backbone.{k}": v for k, v in bb.state_dict().items()}, "method_name": "simclr", "model_name": "resnet18",
                "model_kwargs": {"width": width}, "backbone_prefix": "backbone.", "data_mean": [0.5] * 3, "data_std": [0.25] * 3,
                "step": 7, "config": {"data": {"dataset": "cifar100", "fraction": 1.0}}}, path)
    return path


@pytest.mark.parametrize("command", [["finetune", "--mode", "head"], ["probe"], ["probe", "--augment"]])
def test_the_resolved_config_of_a_run_on_a_checkpoint_records_the_built_architecture(tmp_path, capsys, command):
    ckpt = _checkpoint(tmp_path / "last.pt")
    assert main([*command, "--backbone", str(ckpt), "--print-config"]) == 0
    cfg = tomllib.loads(capsys.readouterr().out)
    assert cfg["model"]["name"] == "resnet18" and cfg["model"]["kwargs"] == {"width": 8}


def test_an_architecture_override_that_contradicts_the_checkpoint_is_refused(tmp_path):
    ckpt = _checkpoint(tmp_path / "last.pt")
    with pytest.raises(ReprlabError, match=r"model\.kwargs.*width.*16.*checkpoint.*width.*8"):
        from reprlab.commands import finetune
        import argparse

        p = argparse.ArgumentParser()
        finetune.add_arguments(p)
        finetune.run_config(p.parse_args(["--backbone", str(ckpt), "model.kwargs.width=16"]))
