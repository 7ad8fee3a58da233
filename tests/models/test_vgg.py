"""The VGG ImageNet preset (reprlab/models/vgg.py): torchvision's layout, and errors in its weights."""

from __future__ import annotations

import torch
import torchvision
import pytest

from reprlab.errors import ReprlabError
from reprlab.models import create_model


def test_vgg_imagenet_head_layout() -> None:
    with torch.device("meta"):
        model = create_model("vgg11_bn_imagenet224", num_classes=100)
        ref = torchvision.models.vgg11_bn()
    # Identical keys and shapes except the classifier width: torchvision weights map 1:1.
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert ours.keys() == theirs.keys()
    assert [k for k in ours if ours[k] != theirs[k]] == ["classifier.6.weight", "classifier.6.bias"]
    assert model.get_classifier() is model.classifier[6] and model.num_features == 4096


def test_vgg_imagenet_weights_errors(tmp_path) -> None:
    with pytest.raises(ReprlabError, match="not found"):
        create_model("vgg11_bn_imagenet224", weights=str(tmp_path / "nope.pth"))
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ReprlabError, match="features.0.weight"):
        create_model("vgg11_bn_imagenet224", weights=str(tmp_path / "bad.pth"))
