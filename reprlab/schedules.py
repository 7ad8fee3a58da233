"""Schedules as pure functions of the global step: the learning rate and any scalar
hyperparameter (EMA momentum, DINO's teacher temperature, weight decay...).

Being a function of the step (not an object with internal state) is what makes resuming exact:
the step counter in the checkpoint is the whole schedule state. Torch-free, below every layer
that uses it (config, methods, the loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SHAPES = ("constant", "linear", "cosine")


def _cosine(t: float) -> float:
    """1 at t=0 falling to 0 at t=1 along half a cosine."""
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg) -> float:
    """Factor for the update made at ``step`` (0-based); ``cfg`` is a ScheduleConfig."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup  # linear warm-up reaching the peak at the end of warm-up
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "multistep":
        epoch = step / steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "cosine":
        span = max(1, total_steps - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * _cosine((step - warmup) / span)
    raise ValueError(f"unknown schedule {cfg.name!r}")


@dataclass
class ScalarSchedule:
    """A scalar hyperparameter that moves with the global step.

    In a config file a scheduled key takes either a number (constant) or a table, e.g.
    ``momentum = {start = 0.99, end = 1.0, shape = "cosine"}`` (BYOL) or
    ``teacher_temperature = {warmup_from = 0.04, warmup_epochs = 30, start = 0.07}`` (DINO).
    A table sets only the fields it names: the others keep the method's default schedule
    (``method.momentum = {start = 0.996}`` on BYOL still ends at 1.0); write ``end`` too, or a
    plain number, for a constant.
    """

    start: float = 0.0  # value right after warm-up (at step 0 when there is none)
    end: float | None = None  # value at the last step; empty = start (no change after warm-up)
    shape: str = "cosine"  # constant | linear | cosine: how the value goes from start to end after warm-up
    warmup_epochs: float = 0.0  # linear ramp from warmup_from to start over this many epochs
    warmup_from: float = 0.0  # value at step 0 when warmup_epochs > 0

    def at(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        """The value used for the update made at ``step`` (0-based)."""
        warmup = int(round(self.warmup_epochs * steps_per_epoch))
        if warmup > 0 and step < warmup:
            return self.warmup_from + (self.start - self.warmup_from) * step / warmup
        end = self.start if self.end is None else self.end
        if self.shape == "constant" or end == self.start:
            return self.start
        t = (step - warmup) / max(1, total_steps - 1 - warmup)
        if self.shape == "linear":
            return self.start + (end - self.start) * min(1.0, max(0.0, t))
        return end + (self.start - end) * _cosine(t)

    def values(self) -> list[float]:
        """Every value the schedule can take (for range checks)."""
        out = [self.start, self.start if self.end is None else self.end]
        return out + ([self.warmup_from] if self.warmup_epochs > 0 else [])


#: the type of a config field that may follow a schedule: a number or a ScalarSchedule
Scheduled = float | ScalarSchedule


def value_at(v: "float | ScalarSchedule", step: int, total_steps: int, steps_per_epoch: int) -> float:
    return v.at(step, total_steps, steps_per_epoch) if isinstance(v, ScalarSchedule) else float(v)


def all_values(v: "float | ScalarSchedule") -> list[float]:
    return v.values() if isinstance(v, ScalarSchedule) else [float(v)]
