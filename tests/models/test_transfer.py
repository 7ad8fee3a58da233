"""Weight transfer (reprlab/models/transfer.py): torchvision state dicts onto the CIFAR variants."""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
import pytest

from reprlab.errors import ReprlabError
from reprlab.models import create_model
from reprlab.models.transfer import load_matching


def test_torchvision_resnet18_weights_map() -> None:
    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    ours = create_model("resnet18", num_classes=100)
    fc_before = ours.fc.weight.detach().clone()
    loaded, skipped = load_matching(ours, ref.state_dict())
    # Only the 7x7 ImageNet stem and the 1000-class classifier cannot map onto the CIFAR variant.
    assert sorted(skipped) == ["conv1.weight", "fc.bias", "fc.weight"]
    assert len(loaded) == len(ref.state_dict()) - 3
    sd = ours.state_dict()
    for key in ["layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.downsample.0.weight", "bn1.running_var"]:
        assert key in loaded
        assert torch.equal(sd[key], ref.state_dict()[key])
    assert torch.equal(ours.fc.weight, fc_before)  # skipped tensors keep the model's values


def test_torchvision_vgg11_bn_weights_map() -> None:
    torch.manual_seed(0)
    ref = torchvision.models.vgg11_bn(init_weights=False)  # default layer init is enough here
    with torch.no_grad():
        ref.features[1].running_mean.uniform_()  # a buffer, to check buffers travel too
    ours = create_model("vgg11_bn", num_classes=100)
    loaded, skipped = load_matching(ours, ref.state_dict())
    feature_keys = [k for k in ref.state_dict() if k.startswith("features.")]
    assert sorted(loaded) == sorted(feature_keys)
    assert sorted(skipped) == sorted(k for k in ref.state_dict() if k.startswith("classifier."))
    for i, layer in enumerate(ref.features):
        if isinstance(layer, nn.Conv2d):
            assert torch.equal(ours.features[i].weight, layer.weight), f"features.{i}"
    assert torch.equal(ours.features[1].running_mean, ref.features[1].running_mean)


def test_load_matching_rejects_non_mapping() -> None:
    with pytest.raises(ReprlabError, match="expected a mapping"):
        load_matching(nn.Linear(2, 2), [torch.zeros(2)])  # type: ignore[arg-type]
