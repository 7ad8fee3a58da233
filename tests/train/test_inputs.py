"""A run knows the inputs it was made from: the identity of its backbone (a checkpoint's sha256)
is recorded, a run whose backbone changed is refused like a changed config, and a checkpoint
carries the provenance of the backbone it was made from through any chain of probe and
fine-tune. End to end on the real CIFAR-100 (width-8 ResNet, a few steps)."""

import hashlib
import json

import pytest
import torch

from reprlab.cli import main
from reprlab.inputs import read_provenance

pytestmark = pytest.mark.realdata

SIMCLR = "reprlab/configs/pretrain/simclr_cifar100.toml"
# a few steps of a width-8 ResNet on 2% of the training split; the cached probe fits one L2 in a few iterations
TINY = ["model.kwargs.width=8", "train.batch_size=32", "train.max_steps=2", "data.fraction=0.02", "data.val_size=500",
        "train.progress=false", "train.num_threads=1", "train.eval_batch_size=1000", "method.knn_every_epochs=0", "train.eval_test=false"]
PROBE = ["data.fraction=0.02", "train.eval_test=false", "data.val_size=500", "train.num_threads=1", "train.eval_batch_size=1000", "eval.l2_grid=[0.0]", "eval.max_iter=5"]
LOOP = ["data.fraction=0.02", "data.val_size=500", "train.num_threads=1", "train.eval_batch_size=1000", "train.batch_size=32",
        "train.max_steps=2", "train.progress=false", "train.eval_test=false"]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _common(data_root, cache_root, out):
    return ["--data-root", str(data_root)], [f'data.cache_dir="{cache_root}"', f'run.out_dir="{out}"']


def test_a_probe_whose_backbone_was_rewritten_by_pretrain_rerun_is_refused_naming_both_identities(data_root, cache_root, tmp_path, capsys):
    head, tail = _common(data_root, cache_root, tmp_path)
    pretrain = [*head, "pretrain", "--config", SIMCLR, *TINY, *tail, 'run.name="bb"']
    ckpt = tmp_path / "bb" / "checkpoints" / "last.pt"
    assert main(pretrain) == 0
    probe = [*head, "probe", "--backbone", str(ckpt), *PROBE, *tail, 'run.name="p"']
    assert main(probe) == 0
    run = tmp_path / "p"
    first = json.loads((run / "result.json").read_text())
    sha1 = _sha256(ckpt)
    assert first["inputs"]["eval.backbone"]["sha256"] == sha1 and first["inputs"]["eval.backbone"]["path"] == str(ckpt)
    assert json.loads((run / "inputs.json").read_text()) == first["inputs"]

    # the pretraining again with another config: the same path, the same step, other weights
    assert main([*pretrain, "optim.lr=0.9", "--rerun"]) == 0
    assert torch.load(ckpt, weights_only=False)["step"] == first["backbone"]["pretrain_step"] == 2
    sha2 = _sha256(ckpt)
    assert sha2 != sha1

    # the same probe command: refused (not "already complete" with the old numbers), nothing rewritten
    mtime = (run / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(probe) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"reprlab: error: run directory {run} holds a complete run made from another input")
    assert f"eval.backbone {ckpt}: recorded sha256 {sha1[:12]}, now sha256 {sha2[:12]}" in err[0] and "--rerun" in err[0]
    assert (run / "result.json").stat().st_mtime_ns == mtime

    # --rerun replaces it with a probe of the new backbone
    assert main([*probe, "--rerun"]) == 0
    again = json.loads((run / "result.json").read_text())
    assert again["inputs"]["eval.backbone"]["sha256"] == sha2 == json.loads((run / "inputs.json").read_text())["eval.backbone"]["sha256"]
    assert again["backbone"]["provenance"]["checkpoint_sha256"] == sha2


def test_a_checkpoint_carries_its_backbones_provenance_through_probe_and_finetune(data_root, cache_root, tmp_path):
    head, tail = _common(data_root, cache_root, tmp_path)
    assert main([*head, "pretrain", "--config", SIMCLR, *TINY, "data.fraction=0.03", *tail, 'run.name="bb"']) == 0
    bb = tmp_path / "bb" / "checkpoints" / "last.pt"
    origin = read_provenance(tmp_path / "bb")
    assert (origin["method"], origin["dataset"], origin["fraction"], origin["epochs"], origin["steps"]) == ("simclr", "cifar100", 0.03, 500, 2)
    assert origin["via"] == [] and origin["checkpoint_sha256"] == _sha256(bb)
    assert len(origin["config_hash"]) == 8 and int(origin["config_hash"], 16) >= 0

    # an augmented probe over it, then a full fine-tune of the probe's checkpoint
    assert main([*head, "probe", "--augment", "--backbone", str(bb), *LOOP, *tail, 'run.name="aug"']) == 0
    aug = read_provenance(tmp_path / "aug")
    assert {k: aug[k] for k in origin if k != "via"} == {k: origin[k] for k in origin if k != "via"}  # still the SimCLR backbone
    assert [(v["task"], v["protocol"], v["source_sha256"]) for v in aug["via"]] == [("probe-augment", "linear-augment", _sha256(bb))]
    aug_ckpt = tmp_path / "aug" / "checkpoints" / "last.pt"
    assert main([*head, "finetune", "--backbone", str(aug_ckpt), *LOOP, *tail, 'run.name="ft"']) == 0
    ft = read_provenance(tmp_path / "ft" / "checkpoints" / "last.pt")
    assert ft["method"] == "simclr" and ft["fraction"] == 0.03 and ft["checkpoint_sha256"] == origin["checkpoint_sha256"]
    assert [(v["protocol"], v["source_sha256"]) for v in ft["via"]] == [("linear-augment", _sha256(bb)), ("finetune-full", _sha256(aug_ckpt))]

    # a cached probe of the end of the chain records the SimCLR backbone, not "supervised, epochs 1"
    assert main([*head, "probe", "--backbone", str(tmp_path / "ft"), *PROBE, *tail, 'run.name="p"']) == 0
    result = json.loads((tmp_path / "p" / "result.json").read_text())
    assert (result["method"], result["backbone_source"], result["fraction"]) == ("simclr", "simclr", 0.03)
    assert result["backbone"]["pretrain_epochs"] == 500 and result["backbone"]["pretrain_step"] == 2
    assert result["backbone"]["via"] == ["linear-augment", "finetune-full"]
