"""The keys that mean something for a run.

Every key stays known to every run (an unknown key is rejected whatever the method; see
:mod:`reprlab.config`), but a BYOL run reads no ``[aug]`` and a cosine schedule no milestones.
The run's ``config.toml``, ``--print-config`` and ``reprlab config --method NAME`` show only the
keys a run of that method reads, and a run directory compares its recorded config with a new
one on those keys only (:func:`reprlab.train.rundir.config_differences`), so a config.toml
written before this filter (every key) still matches the run that wrote it.
"""

from __future__ import annotations

from typing import Any, Callable

from reprlab.config import Config, to_dict

Rule = tuple[str, Callable[[Config], bool]]


def _supervised(c: Config) -> bool:
    return c.method.name == "supervised"


#: (key or section, whether a run of ``cfg`` reads it), by the method
METHOD_KEYS: tuple[Rule, ...] = (
    ("aug", _supervised),  # the supervised augmentation recipe; self-supervised methods draw [views]
    ("views", lambda c: not _supervised(c)),
    ("eval", _supervised),  # the linear protocol and fine-tuning (and a supervised run's input resolution)
    ("optim.backbone_lr_mult", _supervised),  # fine-tuning only
)
#: ... and by the optimiser and the schedule chosen
CHOICE_KEYS: tuple[Rule, ...] = (
    ("optim.momentum", lambda c: c.optim.name in ("sgd", "lars")),
    ("optim.nesterov", lambda c: c.optim.name == "sgd"),
    ("optim.betas", lambda c: c.optim.name == "adamw"),
    ("optim.lars_eta", lambda c: c.optim.name == "lars"),
    ("optim.lars_clip_lr", lambda c: c.optim.name == "lars"),
    ("schedule.milestones", lambda c: c.schedule.name == "multistep"),
    ("schedule.gamma", lambda c: c.schedule.name == "multistep"),
    ("schedule.min_lr_ratio", lambda c: c.schedule.name == "cosine"),
    ("method.online_probe_lr", lambda c: getattr(c.method, "online_probe", False)),
)


def unread_keys(cfg: Config, choices: bool = True) -> list[str]:
    """The keys and sections a run of ``cfg`` does not read: its method's, and with ``choices``
    those of the optimisers and schedules it did not choose (``reprlab config`` lists those, so
    that a reader finds ``optim.betas`` before choosing AdamW)."""
    return [key for key, reads in METHOD_KEYS + (CHOICE_KEYS if choices else ()) if not reads(cfg)]


def is_under(key: str, keys: list[str]) -> bool:
    """Whether dotted ``key`` is one of ``keys`` or inside one of their sections."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def read_dict(cfg: Config) -> dict[str, Any]:
    """``to_dict(cfg)`` without the keys the run does not read: what its config.toml holds."""
    out = to_dict(cfg)
    for key in unread_keys(cfg):
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            d = d.get(p, {})
        d.pop(leaf, None)
    return out
