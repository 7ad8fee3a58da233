"""DINO's self-distillation loss and teacher centring (Caron et al. 2021, "Emerging
properties in self-supervised vision transformers", eqs. 1-4 and Algorithm 1).

The student sees all V crops of an image (``n_global`` global crops first, then the local
ones); the teacher sees only the global crops. With prototype logits ``s_v`` (student, crop v)
and ``t_g`` (teacher, global crop g), a centre ``c`` and temperatures ``tau_s, tau_t``:

    P_t^g = softmax((t_g - c) / tau_t)          (constant: no gradient to teacher or centre)
    log P_s^v = log_softmax(s_v / tau_s)
    L = mean over pairs (g, v) with v != g of  mean_b  -sum_k P_t^g[b, k] log P_s^v[b, k]

A pair is skipped when the student crop is the very crop the teacher saw (v == g); every
other (teacher global crop, student crop) pair counts, so there are ``n_global * (V - 1)``.

The centre is an EMA of the teacher's batch-mean output (eq. 4), see
:func:`dino_center_update`. Defaults follow the paper: ``tau_s = 0.1``, ``tau_t = 0.04``
(warmed up towards 0.07 by the caller's schedule) and centre momentum 0.9.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses._common import (
    AllReduceFn,
    as_crop_list,
    check_fraction,
    check_positive,
    compute_dtype,
    resolve_all_reduce,
    full_precision,
)

__all__ = ["dino_center_update", "dino_loss"]


def _check_center(center: object, dim: int) -> Tensor:
    if not isinstance(center, Tensor) or center.numel() != dim or center.ndim not in (1, 2):
        shape = tuple(center.shape) if isinstance(center, Tensor) else type(center).__name__
        raise ReprlabError(f"DINO center has shape {shape}; expected ({dim},) or (1, {dim})")
    if not center.is_floating_point():
        raise ReprlabError(f"DINO center has dtype {center.dtype}; expected floating point")
    return center.reshape(dim)


@full_precision
def dino_loss(
    student_out: Sequence[Tensor] | Tensor,
    teacher_out: Sequence[Tensor] | Tensor,
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
    n_global: int = 2,
    n_crops: Optional[int] = None,
) -> Tensor:
    """Cross-entropy between centred, sharpened teacher and student outputs (Caron et al. 2021).

    Args:
        student_out: logits of all V crops, global first: a sequence of V (B, K) tensors, a
            stacked (V, B, K) tensor, or the crops concatenated into (V * B, K) together
            with ``n_crops = V``.
        teacher_out: teacher logits of the ``n_global`` global crops, in the same order as
            the first student crops: a sequence, a (n_global, B, K) tensor or a concatenated
            (n_global * B, K) tensor. No gradient flows into it.
        center: (K,) or (1, K) centre subtracted from the teacher logits; no gradient.
        student_temp: ``tau_s > 0``.
        teacher_temp: ``tau_t > 0``.
        n_global: number of global crops, >= 1; with V == n_global it must be >= 2 so that
            some pair exists.
        n_crops: V, needed only for a concatenated 2-D ``student_out``.

    Returns:
        A scalar tensor (float32, or float64 for float64 inputs).

    Raises:
        ReprlabError: for mismatched crop shapes, crop counts or bad temperatures.
    """
    tau_s = check_positive(student_temp, "student_temp", "DINO")
    tau_t = check_positive(teacher_temp, "teacher_temp", "DINO")
    if isinstance(n_global, bool) or not isinstance(n_global, int) or n_global < 1:
        raise ReprlabError(f"DINO n_global {n_global!r} is invalid; expected an int >= 1")
    students = as_crop_list(student_out, n_crops, "student_out", "DINO")
    teachers = as_crop_list(teacher_out, n_global, "teacher_out", "DINO")
    n_views = len(students)
    if len(teachers) != n_global or n_views < n_global or n_global * (n_views - 1) == 0:
        raise ReprlabError(
            f"DINO got {len(teachers)} teacher crop(s) and {n_views} student crop(s) for "
            f"n_global={n_global}; expected n_global teacher crops, at least as many student "
            "crops and at least one (teacher, other student crop) pair"
        )
    if teachers[0].shape != students[0].shape:
        raise ReprlabError(
            f"DINO teacher crops have shape {tuple(teachers[0].shape)} and student crops "
            f"{tuple(students[0].shape)}; expected equal (B, K)"
        )
    batch, dim = students[0].shape
    dtype = compute_dtype(*students, *teachers)

    log_p_student = torch.log_softmax(torch.stack(students).to(dtype) / tau_s, dim=-1)
    with torch.no_grad():
        shift = _check_center(center, dim).to(dtype)
        p_teacher = torch.softmax((torch.stack(teachers).to(dtype) - shift) / tau_t, dim=-1)
    # ce[g, v] = mean_b -sum_k P_t^g log P_s^v: every (teacher, student) crop pair at once.
    ce = -torch.einsum("gbk,vbk->gv", p_teacher, log_p_student) / batch
    same_crop = torch.zeros_like(ce, dtype=torch.bool)
    diagonal = torch.arange(n_global, device=ce.device)
    same_crop[diagonal, diagonal] = True
    return ce.masked_select(~same_crop).mean()


@full_precision
@torch.no_grad()
def dino_center_update(
    center: Tensor,
    teacher_out: Sequence[Tensor] | Tensor,
    momentum: float = 0.9,
    all_reduce: Optional[AllReduceFn] = None,
) -> Tensor:
    """EMA of the teacher's batch-mean output: ``m * center + (1 - m) * mean_b t_b`` (eq. 4).

    Args:
        center: (K,) or (1, K) current centre.
        teacher_out: teacher logits, (N, K) or a sequence of (B, K) crops (all are averaged).
        momentum: ``m`` in [0, 1]; the paper uses 0.9.
        all_reduce: optional sum-over-ranks hook, applied to the per-rank sum of the outputs
            and to the per-rank row count, so the mean is over the global batch. ``None`` is
            one process.

    Returns:
        The new centre, a new tensor with ``center``'s shape and dtype (no gradient).
    """
    m = check_fraction(momentum, "momentum", "DINO")
    reduce = resolve_all_reduce(all_reduce)
    rows = torch.cat(as_crop_list(teacher_out, 1, "teacher_out", "DINO"), dim=0)
    flat_center = _check_center(center, rows.shape[1])
    dtype = compute_dtype(rows, center)
    total = reduce(rows.to(dtype).sum(dim=0))
    count = reduce(total.new_tensor(float(rows.shape[0])))
    new = m * flat_center.to(dtype) + (1.0 - m) * (total / count)
    return new.reshape(center.shape).to(center.dtype)
