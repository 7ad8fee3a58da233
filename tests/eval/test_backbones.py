"""eval/backbones.py: an ImageNet-supervised backbone from a local state dict, and a bad one."""

import pytest
import torch
import torchvision

from reprlab.config import load_config
from reprlab.errors import ReprlabError
from reprlab.eval.backbones import load_backbone

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _cfg(*extra):
    return load_config(None, ["model.channels_last=false", "eval.max_iter=50", "train.eval_batch_size=64", *extra])


def test_imagenet_supervised_from_a_local_state_dict(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18()
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(tv.state_dict(), path)
    bb = load_backbone("imagenet-supervised", _cfg(f'eval.weights="{path}"'), MEAN, STD)
    assert bb.input_size == 224 and bb.mean == (0.485, 0.456, 0.406)
    sd = bb.model.state_dict()
    assert torch.equal(sd["conv1.weight"], tv.state_dict()["conv1.weight"]) and torch.equal(sd["layer4.1.bn2.running_var"], tv.state_dict()["layer4.1.bn2.running_var"])
    x = torch.randn(2, 3, 64, 64)
    tv.fc = torch.nn.Identity()
    tv.eval(), bb.model.eval()
    assert torch.allclose(bb.model(x), tv(x), atol=1e-5)  # same network as torchvision's
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in tv.state_dict().items() if k != "conv1.weight"}, bad)
    with pytest.raises(ReprlabError, match=r"bad\.pth.*conv1\.weight.*missing"):
        load_backbone("imagenet-supervised", _cfg(f'eval.weights="{bad}"'), MEAN, STD)
