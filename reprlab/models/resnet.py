"""ResNets for 32x32 inputs, built on torchvision's ResNet classes.

The CIFAR variant (He et al. 2016, sec. 4.2 style stem as used by most CIFAR reproductions)
replaces ImageNet's 7x7 stride-2 convolution and max-pool with one 3x3 stride-1 convolution, so
a 32x32 image keeps a 32x32 map in ``layer1``. Keeping torchvision's module names
(``conv1``, ``layer1.0.conv1``, ``fc``...) means torchvision weights map onto every tensor whose
shape agrees. Self-supervised pretraining keeps this stem whatever the source dataset: a
backbone pretrained at 64 px with an ImageNet stem would see 32 px CIFAR images at a quarter of
the spatial resolution it learned on.
"""

from __future__ import annotations


import torch
import torch.nn as nn
from torchvision.models import resnet as tvr

from reprlab.errors import ReprlabError
from reprlab.models.registry import register_model
from reprlab.models.transfer import read_weights_file


class CifarResNet(tvr.ResNet):
    """torchvision ``ResNet`` with a selectable stem and base width."""

    def __init__(
        self,
        block: type[tvr.BasicBlock] | type[tvr.Bottleneck],
        layers: list[int],
        num_classes: int = 100,
        width: int = 64,
        stem: str = "cifar",
        zero_init_residual: bool = False,
    ) -> None:
        # torchvision hard-codes 64 channels; rebuilding __init__ here is what lets a narrow
        # ResNet (width=16/32) exist for quick CPU experiments with the same module names.
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.dilation, self.groups, self.base_width = 1, 1, 64
        self.inplanes = width
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
            self.input_size = 32
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.input_size = 224
        else:
            raise ReprlabError(f"unknown ResNet stem {stem!r}; expected 'cifar' or 'imagenet'")
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = width * 8 * block.expansion
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, tvr.BasicBlock):
                    nn.init.zeros_(m.bn2.weight)
                elif isinstance(m, tvr.Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model("resnet18", family="cnn", description="CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool)")
def resnet18(num_classes: int = 100, width: int = 64, zero_init_residual: bool = False) -> CifarResNet:
    return CifarResNet(tvr.BasicBlock, [2, 2, 2, 2], num_classes, width, "cifar", zero_init_residual)


@register_model("resnet34", family="cnn", description="CIFAR ResNet-34 (3x3 stride-1 stem, no max-pool)")
def resnet34(num_classes: int = 100, width: int = 64, zero_init_residual: bool = False) -> CifarResNet:
    return CifarResNet(tvr.BasicBlock, [3, 4, 6, 3], num_classes, width, "cifar", zero_init_residual)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@register_model(
    "resnet18_imagenet",
    family="cnn",
    input_size=224,
    description="torchvision ResNet-18 with its ImageNet stem; weights='imagenet' or a state-dict path",
)
def resnet18_imagenet(num_classes: int = 1000, weights: str | None = None) -> CifarResNet:
    """The ImageNet-supervised baseline: torchvision's architecture and ``IMAGENET1K_V1`` weights.

    ``weights="imagenet"`` downloads the published weights through torchvision (needs internet);
    ``weights=<path>`` loads a local state dict in torchvision's key layout (how the offline tests
    exercise this path). The classifier is then replaced by one with ``num_classes`` outputs.
    """
    model = CifarResNet(tvr.BasicBlock, [2, 2, 2, 2], num_classes=1000, stem="imagenet")
    model.mean, model.std = IMAGENET_MEAN, IMAGENET_STD
    if weights:
        model.load_state_dict(load_imagenet_state_dict(weights))
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


def load_imagenet_state_dict(weights: str) -> dict[str, torch.Tensor]:
    if weights == "imagenet":
        from torchvision.models import ResNet18_Weights

        try:
            return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as e:  # noqa: BLE001 - re-raised as a one-line user error
            raise ReprlabError(
                f"could not download torchvision's ResNet18_Weights.IMAGENET1K_V1 ({type(e).__name__}: {e}); "
                "pass a local state dict with --weights PATH"
            ) from None
    path, sd = read_weights_file(weights, "ImageNet", "a torchvision ResNet-18 state dict (.pth)")
    expected = {"conv1.weight": (64, 3, 7, 7), "fc.weight": (1000, 512)}
    for key, shape in expected.items():
        if key not in sd or tuple(sd[key].shape) != shape:
            got = tuple(sd[key].shape) if key in sd else "missing"
            raise ReprlabError(f"weights file {path}: key {key!r} is {got}, expected shape {shape} (torchvision ResNet-18)")
    return sd
