"""Published CIFAR-100 numbers to read ours against: plain data, free of torch and matplotlib.

The report sets each of our groups beside the published rows of the same method, dataset and
backbone (:func:`matching`), with our training budget as a fraction of theirs, and
``reprlab config published`` lists the table. Only numbers a source states are here; add a row
with its source and URL, never a number from memory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reference", "PUBLISHED", "SOLO_LEARN", "matching"]

SOLO_LEARN = ("solo-learn, CIFAR-100 table (ResNet-18, 1000 epochs)", "https://github.com/vturrisi/solo-learn")
_PYTORCH_CIFAR100 = ("pytorch-cifar100", "https://github.com/weiaicunzai/pytorch-cifar100")
_OPENMIXUP = ("OpenMixup, CIFAR-100 mixup benchmark", "https://github.com/Westlake-AI/openmixup")
_CCT = ("Compact Transformers (Hassani et al. 2021)", "https://github.com/SHI-Labs/Compact-Transformers")


@dataclass(frozen=True)
class Reference:
    """One published top-1 accuracy on a dataset's test split."""

    method: str  # reprlab's method name (registry key); "supervised" for training from scratch
    dataset: str  # reprlab's dataset name
    backbone: str  # the network as the source names it
    model: str  # reprlab's model name it corresponds to (result.json's "model")
    epochs: int  # the source's training (pretraining) epochs
    protocol: str  # how the source measured top-1
    top1: float  # percent
    source: str
    url: str
    note: str = ""  # what else sets the row apart (augmentation, parameters)

    @property
    def label(self) -> str:
        return f"{self.backbone}{f' ({self.note})' if self.note else ''}, {self.epochs} epochs, {self.protocol}"


def _solo(method: str, top1: float) -> Reference:
    return Reference(method, "cifar100", "ResNet-18", "resnet18", 1000, "online linear probe", top1, *SOLO_LEARN)


PUBLISHED: tuple[Reference, ...] = (
    # solo-learn's README, CIFAR-100 table: Acc@1 of the online linear classifier trained
    # alongside pretraining (on detached features), ResNet-18 with the CIFAR stem, 1000 epochs
    _solo("barlow_twins", 70.90),
    _solo("byol", 70.46),
    _solo("mocov2", 69.89),  # solo-learn's "MoCo V2+"
    _solo("mocov3", 68.83),
    _solo("vicreg", 68.54),
    _solo("dino", 66.76),
    _solo("simsiam", 66.04),
    _solo("simclr", 65.78),
    _solo("swav", 64.88),
    # Supervised training from scratch on CIFAR-100 (test top-1)
    Reference("supervised", "cifar100", "ResNet-18", "resnet18", 200, "from scratch", 75.6, *_PYTORCH_CIFAR100),
    Reference("supervised", "cifar100", "ResNet-18", "resnet18", 200, "from scratch", 76.4, *_OPENMIXUP),
    Reference("supervised", "cifar100", "ResNet-18", "resnet18", 200, "from scratch", 79.5, *_OPENMIXUP, note="with CutMix"),
    Reference("supervised", "cifar100", "CCT-7/3x1", "vit", 200, "from scratch", 77.1, *_CCT, note="3.8 M params, convolutional tokenizer"),
    Reference("supervised", "cifar100", "CCT-7/3x1", "vit", 300, "from scratch", 80.92, *_CCT, note="3.8 M params, convolutional tokenizer"),
)


def matching(method: str | None, dataset: str | None, model: str | None) -> list[Reference]:
    """The published rows of ``method`` on ``dataset`` with reprlab model ``model`` (any of the
    three ``None``: no row), in table order."""
    if not (method and dataset and model):
        return []
    return [r for r in PUBLISHED if r.method == method and r.dataset == dataset and r.model == model]
