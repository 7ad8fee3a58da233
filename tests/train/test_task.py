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


@pytest.mark.parametrize("command", [["probe"], ["probe", "--augment"], ["finetune"]])
def test_a_model_name_that_contradicts_the_checkpoint_is_refused(tmp_path, capsys, command):
    """Was exit 0 with the checkpoint's ResNet silently used in place of the ViT asked for."""
    ckpt = _checkpoint(tmp_path / "last.pt")
    assert main([*command, "--backbone", str(ckpt), 'model.name="vit_c100_small"', "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"reprlab: error: model.name 'vit_c100_small' contradicts the backbone: {ckpt} is a checkpoint of resnet18; "
                   "a backbone's architecture comes from its checkpoint, so drop the model.name override"]
    assert main([*command, "--backbone", str(ckpt), 'model.name="resnet18"', "--print-config"]) == 0  # the checkpoint's own name is no contradiction
    assert main([*command, "--backbone", "imagenet-supervised", 'model.name="vit_c100_small"', "--print-config"]) == 2
    assert "does not apply to the imagenet-supervised backbone" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["probe", "--backbone", "{tmp}/missing.pt"], "backbone checkpoint {tmp}/missing.pt not found"),
    (["probe", "--backbone", "{tmp}/notes.txt"], "backbone checkpoint {tmp}/notes.txt is not a file written by torch.save (it holds text beginning 'some notes"),
    (["finetune", "--backbone", "{tmp}/notes.txt"], "is not a file written by torch.save"),
    (["probe", "--backbone", "{tmp}/dict.pt"], "backbone checkpoint {tmp}/dict.pt: key 'method' missing; not a reprlab checkpoint"),
    (["probe", "--backbone", "imagenet-supervised", "--weights", "{tmp}/missing.pth"], "ImageNet weights file {tmp}/missing.pth not found"),
    (["train", "data.val_size=60000"], "config key 'data.val_size': 60000 would take 600 of the 500 training images of a class"),
    (["pretrain", "--config", "configs/pretrain/dino_cifar100.toml", "views.local.size=40"], "config key 'views.local.size' = 40: method 'dino' needs"),
])
def test_a_config_error_is_refused_before_the_run_directory_is_made(tmp_path, capsys, args, words):
    (tmp_path / "notes.txt").write_text("some notes\n")
    torch.save({"a": torch.zeros(1)}, tmp_path / "dict.pt")
    out = tmp_path / "runs"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(["--data-root", str(tmp_path / "none"), *argv, "data.download=false", f'run.out_dir="{out}"', f'data.cache_dir="{tmp_path}/c"',
                 "train.progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words.replace("{tmp}", str(tmp_path)) in err[0], err
    assert not out.exists()  # no failed run directory left behind


def test_a_bad_imagenet_weights_file_says_what_it_holds_and_what_was_expected(tmp_path):
    """Was `weights file ... cannot be read (KeyError: 101)`."""
    from reprlab.models.resnet import load_imagenet_state_dict

    (tmp_path / "w.pth").write_text("hello\n")
    with pytest.raises(ReprlabError, match=r"^ImageNet weights file .*w\.pth is not a file written by torch\.save \(it holds text beginning 'hello\\n'\); "
                                           r"expected a torchvision ResNet-18 state dict \(\.pth\)$"):
        load_imagenet_state_dict(str(tmp_path / "w.pth"))
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(ReprlabError, match=r"holds a Tensor, not a state dict; expected a torchvision ResNet-18 state dict"):
        load_imagenet_state_dict(str(tmp_path / "t.pth"))
