"""Input checks and the all-reduce hook type shared by the self-supervised losses.

Each loss validates its own arguments with these helpers so that a wrong shape or a bad
coefficient fails with a one-line :class:`~reprlab.errors.ReprlabError` that names the loss,
instead of a broadcasting error deep inside a matrix product.
"""

from __future__ import annotations

import contextlib
import functools

import math
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from reprlab.errors import ReprlabError

__all__ = [
    "AllReduceFn",
    "as_crop_list",
    "check_fraction",
    "check_matrix",
    "check_nonnegative",
    "check_positive",
    "check_same_shape",
    "compute_dtype",
    "resolve_all_reduce",
    "softplus_threshold",
]

#: Returns the elementwise sum of its argument over all ranks (a sum-all-reduce). On one
#: process it is the identity. To let gradients reach every rank's samples it must be
#: differentiable, e.g. ``reprlab.distributed.all_reduce_sum``.
AllReduceFn = Callable[[Tensor], Tensor]


def _identity(tensor: Tensor) -> Tensor:
    return tensor


def resolve_all_reduce(all_reduce: Optional[AllReduceFn]) -> AllReduceFn:
    """Return ``all_reduce``, or the identity (a single process) when it is ``None``."""
    return _identity if all_reduce is None else all_reduce


def _as_float(value: object, what: str, where: str, expected: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ReprlabError(
            f"{where} {what} {value!r} is not a number; expected {expected}"
        ) from None
    if not math.isfinite(number):
        raise ReprlabError(f"{where} {what} {value!r} is invalid; expected {expected}")
    return number


def check_positive(value: object, what: str, where: str) -> float:
    """Return ``value`` as a float, or raise unless it is finite and > 0."""
    number = _as_float(value, what, where, "a float > 0")
    if number <= 0.0:
        raise ReprlabError(f"{where} {what} {value!r} is invalid; expected a float > 0")
    return number


def check_nonnegative(value: object, what: str, where: str) -> float:
    """Return ``value`` as a float, or raise unless it is finite and >= 0."""
    number = _as_float(value, what, where, "a float >= 0")
    if number < 0.0:
        raise ReprlabError(f"{where} {what} {value!r} is invalid; expected a float >= 0")
    return number


def check_fraction(value: object, what: str, where: str) -> float:
    """Return ``value`` as a float, or raise unless it lies in [0, 1]."""
    number = _as_float(value, what, where, "a float in [0, 1]")
    if not 0.0 <= number <= 1.0:
        raise ReprlabError(f"{where} {what} {value!r} is invalid; expected a float in [0, 1]")
    return number


def check_matrix(x: object, name: str, where: str, min_rows: int = 1) -> None:
    """Raise unless ``x`` is a floating (N, D) tensor with N >= ``min_rows`` and D >= 1."""
    if not isinstance(x, Tensor):
        raise ReprlabError(f"{where} {name} must be a tensor, got {type(x).__name__}")
    if x.ndim != 2 or not x.is_floating_point():
        raise ReprlabError(
            f"{where} {name} has shape {tuple(x.shape)} and dtype {x.dtype}; "
            "expected a floating (N, D) tensor"
        )
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ReprlabError(
            f"{where} {name} has shape {tuple(x.shape)}; expected at least {min_rows} row(s) "
            "and one column"
        )


def check_same_shape(a: Tensor, b: Tensor, names: str, where: str) -> None:
    """Raise unless the two tensors have equal shapes."""
    if a.shape != b.shape:
        raise ReprlabError(
            f"{where} {names} have shapes {tuple(a.shape)} and {tuple(b.shape)}; "
            "expected equal shapes"
        )


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a loss computes in: the inputs' common dtype, but at least float32.

    bf16/fp16 embeddings are promoted because normalisations, softmaxes at small temperatures
    and squared correlations lose most of their significant digits in 8-bit mantissas.
    """
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def as_crop_list(
    crops: Sequence[Tensor] | Tensor, n_crops: Optional[int], name: str, where: str
) -> list[Tensor]:
    """Split per-crop outputs into a list of equal (B, K) tensors.

    Accepts a sequence of (B, K) tensors, a stacked (V, B, K) tensor, or the crops concatenated
    along the batch into a (V * B, K) tensor together with ``n_crops = V``.
    """
    if isinstance(crops, Tensor):
        if crops.ndim == 3:
            out = list(crops.unbind(0))
        elif crops.ndim == 2:
            if n_crops is None or int(n_crops) < 1 or crops.shape[0] % int(n_crops) != 0:
                raise ReprlabError(
                    f"{where} {name} is a concatenated {tuple(crops.shape)} tensor but the crop "
                    f"count is {n_crops!r}; expected a count > 0 that divides {crops.shape[0]}"
                )
            out = list(crops.chunk(int(n_crops), dim=0))
        else:
            raise ReprlabError(
                f"{where} {name} has shape {tuple(crops.shape)}; expected (V, B, K) or (V * B, K)"
            )
    else:
        out = list(crops)
    if not out:
        raise ReprlabError(f"{where} {name} is empty; expected at least one crop")
    for crop in out:
        check_matrix(crop, name, where)
        check_same_shape(out[0], crop, f"{name} crops", where)
    return out


def softplus_threshold(dtype: torch.dtype) -> float:
    """Smallest safe cut-over of ``softplus(x) -> x`` for ``dtype``.

    Above its threshold softplus returns ``x`` and drops ``log1p(exp(-x))``; that term is below
    half an ulp of ``x`` once ``exp(-x) < eps``, i.e. ``x > -log(eps)``. The default threshold 20
    is exact for float32 (``-log(eps) = 15.9``) but not for float64 (36.0), where it costs
    ``exp(-20) = 2e-9`` in the value and in the gradient ``sigmoid(x)`` of anchors whose
    negatives outscore the positive by more than 20 (common at small temperatures).
    """
    return max(20.0, -math.log(torch.finfo(dtype).eps) + 4.0)


def _tensor_devices(values) -> set[str]:
    out: set[str] = set()
    for v in values:
        if isinstance(v, Tensor):
            out.add(v.device.type)
        elif isinstance(v, (list, tuple)):
            out |= _tensor_devices(v)
    return out


def full_precision(fn):
    """Run a loss with autocast off on its inputs' devices.

    The loop calls ``training_step`` under autocast so that the backbone runs in bf16; a loss
    inside it would otherwise have its matmuls cast back to bf16 whatever the dtype of its
    inputs. Losses, like parameters and metrics, are computed in float32 (or float64).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device in _tensor_devices([*args, *kwargs.values()]):
                if torch.is_autocast_enabled(device):
                    stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper
