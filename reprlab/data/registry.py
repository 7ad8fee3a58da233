"""The dataset registry: ``load_splits(cfg.data)`` for every dataset key.

A loader takes the :class:`~reprlab.config.DataConfig` and returns :class:`Splits` (uint8 CPU
tensors; moving them to the device is the loop's job). Fractions and the validation split are
applied here, once, for every dataset alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from reprlab.data.splits import nested_fraction, stratified_split
from reprlab.data.types import Splits
from reprlab.errors import ReprlabError
from reprlab.registry import Registry

#: loaders ``fn(cfg.data) -> Splits``: CIFAR-100 here; the other datasets live in modules of
#: their own (``tinyimagenet.py``, ``imagefolder.py``) and register themselves when imported, on
#: the first look-up of a name not registered yet
DATASETS: Registry[Callable] = Registry("dataset", "reprlab.data", skip=("registry",))


def register_dataset(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a loader ``fn(cfg.data) -> Splits`` under ``name``."""
    return DATASETS.register(name)


#: (classes, training images per class) of the datasets whose validation split is carved from
#: their training split, by (data.dataset, data.labels): what data.val_size may take is known
#: before any data is read
CARVED = {("cifar100", "fine"): (100, 500), ("cifar100", "coarse"): (20, 2500)}


def check_splits(cfg) -> None:
    """Refuse a ``data.val_size`` the training split cannot give (every class keeps a training
    image) before any data is read, so that a run refuses it before it makes its directory."""
    if (cfg.dataset, cfg.labels) not in CARVED:
        return
    classes, per_class = CARVED[cfg.dataset, cfg.labels]
    if -(-cfg.val_size // classes) >= per_class:
        raise ReprlabError(f"config key 'data.val_size': {cfg.val_size} would take {-(-cfg.val_size // classes)} of the {per_class} training images "
                           f"of a class ({cfg.dataset}, {cfg.labels} labels: {classes} classes); expected at most {classes * (per_class - 1)}")


def load_splits(cfg) -> Splits:
    """Load ``cfg.dataset`` and apply ``cfg.fraction`` (nested, stratified) to its train split."""
    splits: Splits = DATASETS.get(cfg.dataset)(cfg)
    if cfg.fraction < 1.0:
        idx = nested_fraction(splits.train.labels, cfg.fraction, cfg.split_seed)
        splits.train = splits.train.subset(idx)
    splits.info.update(fraction=cfg.fraction, train_size=len(splits.train), val_size=len(splits.val))
    return splits


@register_dataset("cifar100")
def _cifar100(cfg) -> Splits:
    from reprlab.data import cifar

    train, test, info = cifar.load(cfg.root, cfg.download, cfg.cache_dir)
    if cfg.labels == "coarse":
        train.labels, train.classes = train.coarse_labels, train.coarse_classes
        test.labels, test.classes = test.coarse_labels, test.coarse_classes
    tr, va = stratified_split(train.labels, cfg.val_size, cfg.split_seed)
    train, val = train.subset(tr), train.subset(va)
    if cfg.resolution != 32:
        from reprlab.data.device import resize_uint8

        train, val, test = (replace(s, images=resize_uint8(s.images, cfg.resolution)) for s in (train, val, test))
    return Splits(train, val, test, "cifar100", cifar.MEAN, cifar.STD, info)
