"""Learning-rate schedules as pure functions of the global step.

A schedule returns the factor applied to every parameter group's base learning rate. Being a
function of the step (not an object with internal state) is what makes resuming exact: the step
counter in the checkpoint is the whole schedule state.
"""

from __future__ import annotations

import math


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
        t = min(1.0, (step - warmup) / span)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {cfg.name!r}")
