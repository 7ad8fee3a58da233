"""Reading weight files, and moving weights between architectures whose module names agree.

The CIFAR variants keep torchvision's module names on purpose (``features.N`` for VGG,
``layerK.i.convJ`` for ResNet), so a torchvision state dict maps onto every tensor whose name
and shape agree; the tensors that cannot map (ImageNet stem, 1000-class classifier, the 25088-wide
VGG head) are reported rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from reprlab.errors import ReprlabError


def read_weights_file(weights: str, label: str, expected: str, wrappers: tuple[str, ...] = ("state_dict",)) -> tuple[Path, Any]:
    """(path, contents) of the local weights file ``weights`` (``~`` expanded), read on the CPU
    with ``weights_only``; a dict wrapping its state dict under one of ``wrappers`` (checked in
    order) is unwrapped. A missing file: ``<label> weights file PATH not found; expected
    <expected>``; an unreadable one: a one-line error naming it."""
    from reprlab.io import load_torch

    path = Path(weights).expanduser()
    if not path.is_file():
        raise ReprlabError(f"{label} weights file {path} not found; expected {expected}")
    sd = load_torch(path, f"{label} weights file", f"; expected {expected}", map_location="cpu", weights_only=True)
    for wrapper in wrappers:
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ReprlabError(f"{label} weights file {path} holds a {type(sd).__name__}, not a state dict; expected {expected}")
    return path, sd


def load_matching(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``state_dict`` whose key exists in ``model`` with the same shape.

    Returns ``(loaded, skipped)``: the keys copied, and the keys of ``state_dict`` that were not
    (absent from the model, or with a different shape). Model tensors absent from
    ``state_dict`` keep their values. Dtypes are converted to the model's (as
    ``load_state_dict`` does).
    """
    if not isinstance(state_dict, Mapping):
        raise ReprlabError(f"state dict of type {type(state_dict).__name__} is not usable; expected a mapping of name -> tensor")
    own = model.state_dict()
    loaded: list[str] = []
    skipped: list[str] = []
    with torch.no_grad():
        for key, value in state_dict.items():
            target = own.get(key)
            if target is None or not isinstance(value, torch.Tensor) or tuple(target.shape) != tuple(value.shape):
                skipped.append(key)
                continue
            # ``state_dict()`` tensors share storage with the parameters/buffers, so an in-place
            # copy updates the model itself.
            target.copy_(value)
            loaded.append(key)
    return loaded, skipped
