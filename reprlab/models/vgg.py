"""VGG with batch normalisation (Simonyan & Zisserman 2015), built on torchvision's ``VGG``.

CIFAR variants (``vgg11_bn``, ``vgg13_bn``, ``vgg16_bn``): torchvision's convolution stacks
(configurations A, B and D: 3x3 convolutions, each followed by BatchNorm and ReLU, and five 2x2
max-pools) turn a 32x32 image into a 512x1x1 map. The head is the one most CIFAR reproductions
use: global average pooling (a no-op at 1x1; it only lets other input sizes work) followed by a
**single** ``Linear(512, num_classes)``. The paper's two 4096-wide hidden layers are dropped: on a
1x1 map they would add ~19.2 M parameters that see one 512-vector, which would make VGG look
bigger than the ResNets and ViTs it is compared with for no benefit on 32 px inputs.

The ImageNet preset ``vgg11_bn_imagenet224`` is torchvision's ``vgg11_bn`` unchanged: 7x7
adaptive pooling and the 25088 -> 4096 -> 4096 -> num_classes classifier with dropout. Its
pre-logit features (``embed``) are the 4096-d output of the second hidden layer.

Both keep torchvision's module names (``features.N``, ``classifier.K``), so a torchvision state
dict maps onto every tensor whose shape agrees (all of ``features`` for the CIFAR variants; see
:func:`reprlab.models.transfer.load_matching`).
"""

from __future__ import annotations


import torch
import torch.nn as nn
from torchvision.models import vgg as tvv

from reprlab.errors import ReprlabError
from reprlab.models.registry import register_model
from reprlab.models.transfer import read_weights_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG(tvv.VGG):
    """torchvision ``VGG`` with the registry contract and a choice of head.

    ``head="cifar"``: ``Linear(512, num_classes)`` on globally pooled features; ``input_size`` 32.
    ``head="imagenet"``: torchvision's 3-layer classifier; ``input_size`` 224.
    """

    def __init__(self, cfg: str, num_classes: int = 100, head: str = "cifar", dropout: float = 0.5) -> None:
        # torchvision's __init__ always builds (and initialises) the 25088x4096 ImageNet head,
        # ~120 M parameters that the CIFAR variant would throw away; building the modules here
        # keeps the module names while skipping that cost.
        nn.Module.__init__(self)
        if head not in ("cifar", "imagenet"):
            raise ReprlabError(f"unknown VGG head {head!r}; expected 'cifar' or 'imagenet'")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ReprlabError(f"num_classes {num_classes!r} is not usable; expected an int >= 0")
        self.head_kind = head
        self.features = tvv.make_layers(tvv.cfgs[cfg], batch_norm=True)
        if head == "cifar":
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.num_features = 512
            self.classifier: nn.Module = self._linear(num_classes)
            self.input_size = 32
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.num_features = 4096
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                self._linear(num_classes),
            )
            self.input_size = 224
        # The same initialisation torchvision applies, so an untrained model is the usual one.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _linear(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        # torchvision's classifier initialisation, also for heads replaced after loading weights.
        fc = nn.Linear(self.num_features, num_classes)
        nn.init.normal_(fc.weight, 0, 0.01)
        nn.init.zeros_(fc.bias)
        return fc

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        if self.head_kind == "imagenet":
            x = self.classifier[:-1](x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_classifier()(self.embed(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier if self.head_kind == "cifar" else self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        if self.head_kind == "cifar":
            self.classifier = self._linear(num_classes)
        else:
            self.classifier[-1] = self._linear(num_classes)


@register_model("vgg11_bn", family="cnn", description="CIFAR VGG-11-BN (config A), single Linear(512, C) head")
def vgg11_bn(num_classes: int = 100) -> VGG:
    return VGG("A", num_classes)


@register_model("vgg13_bn", family="cnn", description="CIFAR VGG-13-BN (config B), single Linear(512, C) head")
def vgg13_bn(num_classes: int = 100) -> VGG:
    return VGG("B", num_classes)


@register_model("vgg16_bn", family="cnn", description="CIFAR VGG-16-BN (config D), single Linear(512, C) head")
def vgg16_bn(num_classes: int = 100) -> VGG:
    return VGG("D", num_classes)


@register_model(
    "vgg11_bn_imagenet224",
    family="cnn",
    input_size=224,
    heavy=True,
    description="torchvision VGG-11-BN with its full ImageNet classifier (~129 M params at 100 classes)",
)
def vgg11_bn_imagenet224(num_classes: int = 100, weights: str | None = None, dropout: float = 0.5) -> VGG:
    """torchvision's ``vgg11_bn`` architecture; ``weights=PATH`` loads a torchvision state dict.

    The file must be in torchvision's key layout with the 1000-class ImageNet head; after loading,
    the last classifier layer is replaced by a freshly initialised one with ``num_classes``
    outputs (kept as is when ``num_classes == 1000``).
    """
    sd = None
    if weights:
        # Check the file against a meta-device twin first: a wrong path or layout fails at once
        # instead of after initialising ~130 M parameters.
        with torch.device("meta"):
            reference = VGG("A", num_classes=1000, head="imagenet").state_dict()
        sd = _read_torchvision_vgg(weights, reference)
    model = VGG("A", num_classes=1000 if weights else num_classes, head="imagenet", dropout=dropout)
    model.mean, model.std = IMAGENET_MEAN, IMAGENET_STD
    if sd is not None:
        model.load_state_dict(sd)
        if num_classes != 1000:
            model.reset_classifier(num_classes)
    return model


def _read_torchvision_vgg(weights: str, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    path, sd = read_weights_file(weights, "VGG", "a torchvision vgg11_bn state dict (.pth)")
    if not isinstance(sd, dict):
        raise ReprlabError(f"weights file {path} holds a {type(sd).__name__}; expected a torchvision vgg11_bn state dict")
    for key, ref in reference.items():
        got = tuple(sd[key].shape) if key in sd else "missing"
        if got != tuple(ref.shape):
            raise ReprlabError(
                f"weights file {path}: key {key!r} is {got}, expected shape {tuple(ref.shape)} (torchvision vgg11_bn, 1000 classes)"
            )
    return sd
