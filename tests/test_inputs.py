"""reprlab/inputs.py: a backbone's identity, a checkpoint's header read without torch."""

import hashlib

import torch

from reprlab.config import load_config
from reprlab.inputs import checkpoint_header, input_differences, input_identities, read_provenance


def test_a_checkpoints_plain_entries_are_read_without_its_tensors_and_a_foreign_file_is_none(tmp_path):
    f = tmp_path / "last.pt"
    torch.save({"model_name": "resnet18", "model_kwargs": {"width": 8}, "step": 7, "method": {"backbone.w": torch.ones(3)},
                "provenance": {"method": "byol", "via": []}, "rng": torch.get_rng_state()}, f)
    head = checkpoint_header(f)
    assert (head["model_name"], head["model_kwargs"], head["step"]) == ("resnet18", {"width": 8}, 7)
    assert not isinstance(head["method"]["backbone.w"], torch.Tensor)  # not read
    prov = read_provenance(tmp_path / "last.pt")
    assert prov["method"] == "byol" and prov["steps"] == 7 and prov["checkpoint_sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert checkpoint_header(tmp_path / "notes.pt") is None


def test_identities_compare_content_not_the_path(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    ia = input_identities(load_config(None, [f'eval.backbone="{a}"']))
    ib = input_identities(load_config(None, [f'eval.backbone="{b}"']))
    assert ia["eval.backbone"]["sha256"] == hashlib.sha256(b"one").hexdigest() and input_differences(ia, ib) == []
    b.write_bytes(b"two")
    assert [k for k, _, _ in input_differences(ia, input_identities(load_config(None, [f'eval.backbone="{b}"'])))] == ["eval.backbone"]
    r0 = input_identities(load_config(None, ['eval.backbone="random-init"', "train.seed=0"]))
    r1 = input_identities(load_config(None, ['eval.backbone="random-init"', "train.seed=1"]))
    assert r0["eval.backbone"]["kind"] == "random-init" and input_differences(r0, r1)
    assert input_differences(None, ia) == [] and input_identities(load_config(None, [])) == {}
