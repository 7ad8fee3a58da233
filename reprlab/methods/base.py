"""What a method is: the part of a run that turns a uint8 batch into a loss.

The loop (``reprlab.train.loop``) owns optimisation, schedules, precision, logging and
checkpoints and knows nothing about SimCLR or CutMix; a method owns its modules, its
augmentation, its evaluation and its own ``[method]`` configuration. The loop calls, per step::

    loss, metrics = method.training_step(images_u8, labels, generator, ctx)
    loss.backward()
    method.before_optimizer_step(ctx)     # gradients are final here (DINO freezes a layer)
    clip, optimizer.step()
    method.after_optimizer_step(ctx)      # EMA targets, queues

``metrics`` is a dict of scalars (0-dim tensors or floats) that the loop averages over each
logging interval and writes as ``train/<key>`` with the loss, in the same single host sync.
Everything that must survive a resume lives in the method's ``state_dict`` (parameters and
registered buffers: EMA targets, queues, DINO's centre).

Adding a method is one file ``reprlab/methods/<name>.py`` that subclasses :class:`Method` (or
:class:`reprlab.methods.ssl.SSLMethod`), declares its ``Config`` dataclass and registers itself
with ``@register_method("<name>")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn

from reprlab.config import MethodConfig
from reprlab.data.device import stats_tensors
from reprlab.data.types import Splits
from reprlab.errors import ReprlabError
from reprlab.registry import METHOD_CONFIGS, METHODS
from reprlab.runtime import resolve_precision
from reprlab.schedules import ScalarSchedule, value_at

#: what training_step returns: the loss and extra scalars logged as train/<key>
StepOutput = tuple[torch.Tensor, dict[str, "torch.Tensor | float"]]


def register_method(name: str) -> Callable[[type["Method"]], type["Method"]]:
    """Decorator: register a method class under ``name``; its ``Config`` must be the dataclass
    registered under that name in :data:`~reprlab.registry.METHOD_CONFIGS`, if there is one."""

    def wrap(cls: type["Method"]) -> type["Method"]:
        if name in METHOD_CONFIGS and METHOD_CONFIGS.get(name) is not cls.Config:
            raise ValueError(f"method {name!r}: its Config {cls.Config.__name__} is not the [method] dataclass registered for it ({METHOD_CONFIGS.get(name).__name__})")
        return METHODS.register(name)(cls)

    return wrap


def get_method(name: str) -> type["Method"]:
    return METHODS.get(name)


@dataclass(frozen=True)
class StepContext:
    """Where the loop is: the update being computed is number ``step`` (0-based) of ``total_steps``."""

    step: int
    total_steps: int
    steps_per_epoch: int

    @property
    def epoch(self) -> int:
        """0-based epoch of this step."""
        return self.step // self.steps_per_epoch

    def value(self, v: "float | ScalarSchedule") -> float:
        """A possibly scheduled hyperparameter at this step (the same schedule code as the lr)."""
        return value_at(v, self.step, self.total_steps, self.steps_per_epoch)


class Method(nn.Module):
    """Base class. Subclasses set ``self.backbone`` (a registry model) and implement the hooks."""

    name = "base"
    #: the dataclass of this method's ``[method]`` section
    Config: type[MethodConfig] = MethodConfig
    #: the validation metric that selects the best checkpoint (higher is better)
    selection_metric = "val/acc1"

    @classmethod
    def default_views(cls) -> dict:
        """The method's view pipelines by name (``[views.NAME]``): its config's."""
        return cls.Config.default_views()

    def __init__(self, cfg, splits: Splits, device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.splits = splits
        self.device = device
        mean, std = stats_tensors(splits.mean, splits.std, device)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.amp_dtype = resolve_precision(cfg.train.precision, device)  # evaluation follows train.precision too

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Checkpoints of earlier versions also held the backbone under its forward alias
        # (`_encode.` / `_forward.`); the same tensors are under `backbone.`.
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(("_encode.", "_forward."))}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- hooks
    def named_trainable(self) -> Iterable[tuple[str, nn.Parameter, float]]:
        """(name, parameter, lr multiplier) of everything the optimiser updates."""
        return ((n, p, 1.0) for n, p in self.named_parameters() if p.requires_grad)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, ctx: StepContext) -> StepOutput:
        """The loss of one uint8 batch and extra scalars to log (``{}`` when none)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, ctx: StepContext) -> StepOutput:
        """:meth:`training_step`: the loop calls the method through ``DistributedDataParallel``
        under data parallelism, and DDP calls ``forward``."""
        return self.training_step(images, labels, generator, ctx)

    def rank_state(self) -> dict[str, torch.Tensor]:
        """State that differs between ranks under data parallelism (a per-rank queue); the
        loop saves every rank's in the checkpoint. Everything else is identical on all ranks."""
        return {}

    def load_rank_state(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v)

    def before_optimizer_step(self, ctx: StepContext) -> None:
        """Called after backward (gradients unscaled), before clipping and the optimiser step."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Called after the optimiser step: momentum targets, queues."""

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
