"""models/export.py: every architecture that maps builds in its library from the printed lines
alone and takes reprlab's state dict with strict=True, computing the same function; those that
do not map are refused with the reason."""

import pytest
import torch

from reprlab.models import create_model
from reprlab.models.export import MAPPERS, Unmappable, library_target

# (registry name, kwargs, library, classes: 0 = headless); the heavy 224 px presets are left out
# (a few hundred MB each), and so is torchvision's VGG but once (it builds a 120 M classifier first)
MAPPED = [
    ("resnet18", {}, "torchvision", 0), ("resnet18", {}, "timm", 10), ("resnet34", {}, "timm", 0),
    ("resnet18_imagenet", {}, "torchvision", 10), ("resnet18_imagenet", {}, "timm", 0), ("vgg11_bn", {}, "torchvision", 10),
    ("vit", {"depth": 2, "dim": 64, "pool": "token"}, "timm", 0), ("vit", {"depth": 2, "dim": 96, "heads": 3, "pool": "avg", "qkv_bias": False}, "timm", 10),
]


@pytest.mark.parametrize("name,kwargs,library,classes", MAPPED)
def test_mapped_architectures_load_strictly_and_compute_the_same(name, kwargs, library, classes):
    torch.manual_seed(0)
    ours = create_model(name, num_classes=classes, **kwargs).eval()
    for m in ours.modules():  # non-trivial BatchNorm statistics, so that they are checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    target = library_target(ours, library, classes)
    assert target.lines[0].startswith(("import", "from")) and any(line.startswith("model = ") for line in target.lines)
    theirs = target.build()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert type(theirs).__module__.split(".")[0] == library  # the library's own class, not reprlab's
    size = ours.input_size if ours.input_size == 32 else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = theirs(x)
        assert out.shape == (2, classes or ours.num_features)
        assert (out - ours(x)).abs().max() <= 1e-5


def test_cifar_resnet_is_torchvisions_with_the_cifar_stem():
    t = library_target(create_model("resnet18", num_classes=0), "torchvision", 0)
    assert t.lines == (
        "import torch, torchvision",
        "model = torchvision.models.resnet18()",
        "model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)",
        "model.maxpool = torch.nn.Identity()",
        "model.fc = torch.nn.Identity()",
    )
    model = t.build()
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, torch.nn.Identity)
    # the ImageNet-stem ResNet is torchvision's as it is
    plain = library_target(create_model("resnet18_imagenet", num_classes=7), "timm", 7)
    assert plain.lines == ("import timm, torch", "model = timm.create_model('resnet18', num_classes=7)")


@pytest.mark.parametrize("name,kwargs,library,reason", [
    ("resnet18", {"width": 16}, "torchvision", "torchvision's resnet18 is 64 channels wide; this one is 16 wide"),
    ("resnet18", {"width": 32}, "timm", "timm's resnet18 is 64 channels wide; this one is 32 wide"),
    ("vgg11_bn", {}, "timm", "timm's vgg11_bn ends in a convolutional pre-logits block"),
    ("vit", {"depth": 1, "dim": 64}, "torchvision", "torchvision's VisionTransformer has no average pooling"),
])
def test_unmappable_architectures_are_refused_with_the_reason(name, kwargs, library, reason):
    with pytest.raises(Unmappable, match=reason):
        library_target(create_model(name, num_classes=0, **kwargs), library, 0)


def test_every_registered_model_has_a_mapper():
    from reprlab.models import list_models

    assert set(list_models()) == set(MAPPERS)  # a new architecture says how it maps (or refuses)
