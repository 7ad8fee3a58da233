"""Containers for decoded image data (uint8, NCHW) and the split of a dataset."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ImageSet:
    """A labelled image array, decoded once: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    coarse_labels: torch.Tensor | None = None
    coarse_classes: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, idx: torch.Tensor) -> "ImageSet":
        return ImageSet(
            self.images[idx],
            self.labels[idx],
            self.classes,
            None if self.coarse_labels is None else self.coarse_labels[idx],
            self.coarse_classes,
        )


@dataclass
class Splits:
    """train (for fitting), val (for model selection) and test (touched once, at the end)."""

    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    info: dict = field(default_factory=dict)
