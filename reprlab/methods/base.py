"""What a method is: the part of a run that turns a uint8 batch into a loss.

The loop (``reprlab.train.loop``) owns optimisation, schedules, precision, logging and
checkpoints and knows nothing about SimCLR or CutMix; a method owns its modules, its
augmentation pipeline and its evaluation. Adding a method is one file that subclasses
:class:`Method` and registers itself with ``@register_method("name")``.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable

import torch
import torch.nn as nn

from reprlab.data.device import stats_tensors
from reprlab.data.types import Splits
from reprlab.errors import ReprlabError
from reprlab.runtime import resolve_precision

METHODS: dict[str, type["Method"]] = {}


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    def wrap(cls: type["Method"]) -> type["Method"]:
        METHODS[name] = cls
        cls.name = name
        return cls

    return wrap


def get_method(name: str) -> type["Method"]:
    import importlib
    import pkgutil

    import reprlab.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):  # one file per method; importing registers it
        if info.name != "base":
            importlib.import_module(f"reprlab.methods.{info.name}")

    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ReprlabError(f"unknown method {name!r}{hint} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


class Method(nn.Module):
    """Base class. Subclasses set ``self.backbone`` (a registry model) and implement the hooks."""

    name = "base"
    #: the validation metric that selects the best checkpoint (higher is better)
    selection_metric = "val/acc1"

    def __init__(self, cfg, splits: Splits, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.splits = splits
        self.device = device
        mean, std = stats_tensors(splits.mean, splits.std, device)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.amp_dtype = resolve_precision(cfg.train.precision, device)  # evaluation follows train.precision too

    # ---- hooks
    def named_trainable(self) -> Iterable[tuple[str, nn.Parameter, float]]:
        """(name, parameter, lr multiplier) of everything the optimiser updates."""
        return ((n, p, 1.0) for n, p in self.named_parameters() if p.requires_grad)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss and (optionally) the number of correctly classified samples of the batch."""
        raise NotImplementedError

    def evaluate(self, split: str, epoch: int) -> dict[str, float]:
        """Metrics on ``split`` ("val" or "test"), namespaced (``val/acc1``...)."""
        raise NotImplementedError

    def eval_due(self, epoch: int, last: bool) -> bool:
        """Whether to evaluate after ``epoch`` (1-based)."""
        return True

    def set_train_mode(self) -> None:
        """Put modules in training mode (a frozen backbone stays in eval mode)."""
        self.train()

    def compile(self) -> None:
        """Compile the hot modules (``model.compile = true``)."""
        raise ReprlabError(f"method {self.name!r} does not support model.compile")

