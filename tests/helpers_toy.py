"""Synthetic in-memory data and a small config for the loop and cached-probe tests that need no
real data: 16 px images of uniform noise in 4 classes, val and test taken from the train set."""

from __future__ import annotations

import torch

from reprlab.config import load_config
from reprlab.data.types import ImageSet, Splits

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def toy_splits(n=256, classes=4):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    s = ImageSet(x, y, [str(i) for i in range(classes)])
    return Splits(s, s.subset(torch.arange(64)), s.subset(torch.arange(64, 128)), "toy", MEAN, STD)


def toy_cfg(tmp_path, *extra):
    return load_config(None, ["model.kwargs.width=4", "train.batch_size=32", "train.epochs=2", "train.progress=false", "train.log_every_steps=4",
                              "optim.lr=0.05", "model.channels_last=false", f'run.out_dir="{tmp_path}"', *extra])
