"""How torchvision and timm spell reprlab's architectures.

For a built reprlab model, :func:`library_target` gives the few lines of Python that build the
same network with the library alone (its own model class, then the modules the CIFAR variant
replaces, e.g. the 3x3 stride-1 ``conv1`` and the missing max-pool of the CIFAR ResNet), so that
reprlab's state dict loads into it with ``strict=True``: reprlab's models keep the libraries'
module names (``models/resnet.py``, ``vgg.py``, ``vit.py``), so the keys are the same and no
tensor is renamed. Those lines are what ``reprlab export`` prints and records, and what it
executes to check the file before writing it, so the printed recipe cannot drift from the file.

Where a library has no exact equivalent (torchvision's and timm's ResNets are 64 wide, timm's VGG
has another head, torchvision has no CIFAR ViT), :class:`Unmappable` says why in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from reprlab.errors import ReprlabError

LIBRARIES = ("torchvision", "timm")


class Unmappable(ReprlabError):
    """The library has no model class this architecture loads into exactly."""


@dataclass(frozen=True)
class Target:
    """A library's model that reprlab's state dict loads into with ``strict=True``."""

    library: str  # "torchvision" | "timm"
    call: str  # the constructor: "torchvision.models.resnet18", "timm.create_model"
    kwargs: dict  # its arguments (timm.create_model: the model name first, as "model_name")
    replaced: dict = field(default_factory=dict)  # module name -> what the CIFAR variant puts there
    lines: tuple[str, ...] = ()  # Python that imports the library and binds `model`

    def build(self) -> nn.Module:
        """Run :attr:`lines` (the library alone builds the model); the model, in eval mode."""
        scope: dict = {}
        exec("\n".join(self.lines), scope)  # noqa: S102 - our own template, filled with ints, floats and names
        return scope["model"].eval()


def _call(fn: str, args: tuple = (), kwargs: dict | None = None) -> str:
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in (kwargs or {}).items()]
    return f"{fn}({', '.join(parts)})"


def _target(library: str, call: str, args: tuple, kwargs: dict, replaced: dict, imports: tuple[str, ...]) -> Target:
    lines = [*imports, f"model = {_call(call, args, kwargs)}"]
    lines += [f"model.{name} = {module}" for name, module in replaced.items()]
    recorded = {"model_name": args[0], **kwargs} if args else dict(kwargs)
    return Target(library, call, recorded, dict(replaced), tuple(lines))


IDENTITY = "torch.nn.Identity()"

# ---- ResNets ---------------------------------------------------------------------------------

#: (block, blocks per stage) -> the name torchvision and timm both give that ResNet
RESNET_NAMES = {("BasicBlock", (2, 2, 2, 2)): "resnet18", ("BasicBlock", (3, 4, 6, 3)): "resnet34"}


def _resnet(model: nn.Module, library: str, num_classes: int) -> Target:
    layers = tuple(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    name = RESNET_NAMES.get((type(model.layer1[0]).__name__, layers))
    width = model.conv1.out_channels
    if name is None:
        raise Unmappable(f"{library} has no ResNet with {layers} blocks per stage")
    if width != 64:
        raise Unmappable(f"{library}'s {name} is 64 channels wide; this one is {width} wide (model.kwargs.width={width})")
    cifar = model.conv1.kernel_size == (3, 3)
    replaced = {}
    if cifar:  # the CIFAR stem: one 3x3 stride-1 convolution, no max-pool (models/resnet.py)
        replaced = {"conv1": "torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)", "maxpool": IDENTITY}
    if library == "timm":  # num_classes=0 is timm's headless model (fc = Identity)
        return _target("timm", "timm.create_model", (name,), {"num_classes": num_classes}, replaced, ("import timm, torch",))
    kwargs = {"num_classes": num_classes} if num_classes else {}
    if not num_classes:
        replaced["fc"] = IDENTITY
    return _target("torchvision", f"torchvision.models.{name}", (), kwargs, replaced, ("import torch, torchvision",))


# ---- VGG -------------------------------------------------------------------------------------


def _vgg(model: nn.Module, library: str, num_classes: int) -> Target:
    name = model.model_name.removesuffix("_imagenet224")
    if library == "timm":
        raise Unmappable(f"timm's {name} ends in a convolutional pre-logits block (ConvMlp), which reprlab's VGG does not have")
    if model.head_kind == "cifar":  # global average pooling and one Linear(512, C), or none
        classifier = f"torch.nn.Linear(512, {num_classes})" if num_classes else IDENTITY
        replaced = {"avgpool": "torch.nn.AdaptiveAvgPool2d(1)", "classifier": classifier}
        return _target("torchvision", f"torchvision.models.{name}", (), {}, replaced, ("import torch, torchvision",))
    # the ImageNet preset is torchvision's vgg11_bn; headless, its 4096-d pre-logits are the features
    kwargs = {"num_classes": num_classes} if num_classes else {}
    replaced = {} if num_classes else {"classifier[6]": IDENTITY}
    return _target("torchvision", f"torchvision.models.{name}", (), kwargs, replaced, ("import torch, torchvision",))


# ---- ViT -------------------------------------------------------------------------------------


def _vit(model: nn.Module, library: str, num_classes: int) -> Target:
    if library == "torchvision":
        raise Unmappable("torchvision's VisionTransformer has no average pooling, another attention layout and fixed 224 px presets")
    c = model.config
    kwargs = {
        "img_size": c["img_size"], "patch_size": c["patch_size"], "embed_dim": c["dim"], "depth": c["depth"],
        "num_heads": model.blocks[0].attn.num_heads, "mlp_ratio": c["mlp_ratio"], "qkv_bias": c["qkv_bias"],
        "class_token": c["pool"] == "token", "global_pool": c["pool"], "num_classes": num_classes,
    }
    imports = ("import torch", "from timm.models.vision_transformer import VisionTransformer")
    return _target("timm", "VisionTransformer", (), kwargs, {}, imports)


#: registry name -> the function that maps that architecture (unlisted: unmappable)
MAPPERS: dict[str, Callable[[nn.Module, str, int], Target]] = {
    "resnet18": _resnet, "resnet34": _resnet, "resnet18_imagenet": _resnet,
    "vgg11_bn": _vgg, "vgg13_bn": _vgg, "vgg16_bn": _vgg, "vgg11_bn_imagenet224": _vgg,
    "vit": _vit, "vit_c100_tiny": _vit, "vit_c100_small": _vit, "vit_c100_r18": _vit, "vit_b16_plus6_224": _vit,
}


def library_target(model: nn.Module, library: str, num_classes: int) -> Target:
    """The ``library`` model that ``model.state_dict()`` loads into with ``strict=True``.

    ``model`` is a built registry model (``create_model``); ``num_classes`` its classifier's
    outputs, 0 for a headless model (``model(x)`` returns the features). :class:`Unmappable`
    when the library has no exact equivalent."""
    if library not in LIBRARIES:
        raise ReprlabError(f"unknown library {library!r}; expected one of {', '.join(LIBRARIES)}")
    mapper = MAPPERS.get(model.model_name)
    if mapper is None:
        raise Unmappable(f"{library} has no equivalent of reprlab's {model.model_name} known to reprlab")
    return mapper(model, library, num_classes)
