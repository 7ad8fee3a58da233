"""Tests for MoCo's queue InfoNCE (He et al. 2020; Chen et al. 2020) against a slow float64
reference that builds each sample's K+1 logits one by one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import moco_infonce, moco_logits


def slow_moco(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """Per sample: -log( e^{q.k/t} / (e^{q.k/t} + sum_j e^{q.queue_j/t}) ), unit q and k."""
    losses = []
    for q_i, k_i in zip(q.unbind(0), k.unbind(0)):
        q_unit = q_i / torch.sqrt(torch.dot(q_i, q_i))
        k_unit = k_i / torch.sqrt(torch.dot(k_i, k_i))
        positive = torch.exp(torch.dot(q_unit, k_unit) / temperature)
        denominator = positive
        for negative in queue.unbind(0):
            denominator = denominator + torch.exp(torch.dot(q_unit, negative) / temperature)
        losses.append(-torch.log(positive / denominator))
    return torch.stack(losses).sum() / len(losses)


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


def _data(batch: int, queue_size: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 16, generator=gen, dtype=torch.float64)
    k = q + 0.8 * torch.randn(batch, 16, generator=gen, dtype=torch.float64)
    queue = F.normalize(torch.randn(queue_size, 16, generator=gen, dtype=torch.float64), dim=1)
    return q, k, queue


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 0.5])
@pytest.mark.parametrize("queue_size", [1, 24])
def test_moco_infonce_matches_slow_reference(
    batch: int, temperature: float, queue_size: int
) -> None:
    q0, k0, queue0 = _data(batch, queue_size, seed=batch * 100 + queue_size)
    qr, kr, queue_r = (t.clone().requires_grad_() for t in (q0, k0, queue0))
    ref = slow_moco(qr, kr, queue_r, temperature)
    ref_g = torch.autograd.grad(ref, (qr, kr, queue_r))

    q, k, queue = (t.clone().requires_grad_() for t in (q0, k0, queue0))
    got = moco_infonce(q, k, queue, temperature)
    assert got.dtype == torch.float64
    got_g = torch.autograd.grad(got, (q, k, queue))
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    for g, r in zip(got_g, ref_g):  # q; k (not detached here: the caller's job); queue
        _assert_rel_close(g, r, 1e-10)

    got32 = moco_infonce(q0.float(), k0.float(), queue0.float(), temperature)
    assert abs(got32.item() - ref.item()) <= 1e-5 * abs(ref.item())


def test_moco_logits_positive_is_column_zero() -> None:
    q0, k0, queue = _data(5, 7, seed=1)
    logits = moco_logits(q0, k0, queue, 0.2)
    assert logits.shape == (5, 8)
    q_unit, k_unit = F.normalize(q0, dim=1), F.normalize(k0, dim=1)
    for i in range(5):
        assert logits[i, 0].item() == pytest.approx(
            torch.dot(q_unit[i], k_unit[i]).item() / 0.2, rel=1e-13
        )
        for j in range(7):
            expected = torch.dot(q_unit[i], queue[j]).item() / 0.2
            assert logits[i, 1 + j].item() == pytest.approx(expected, rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
@pytest.mark.parametrize("queue_size", [1, 3, 6])
def test_moco_closed_form_aligned_positive_orthogonal_queue(
    temperature: float, queue_size: int
) -> None:
    # q_i = k_i = c e_i (i < 2), queue rows e_j (j >= 2) orthogonal to every query: the positive
    # logit is 1/t and each negative 0, so every sample's loss is log(1 + K e^{-1/t}). Were the
    # target any column other than 0, the loss would be log(e^{1/t} + K) instead.
    eye = torch.eye(2 + queue_size, dtype=torch.float64)
    q = 3.0 * eye[:2]
    queue = eye[2:]
    expected = math.log1p(queue_size * math.exp(-1.0 / temperature))
    assert moco_infonce(q, 0.5 * q, queue, temperature).item() == pytest.approx(expected, rel=1e-12)


def test_moco_empty_queue_and_queue_used_as_given() -> None:
    q0, k0, queue = _data(4, 5, seed=2)
    assert moco_infonce(q0, k0, queue[:0], 0.2).item() == pytest.approx(0.0, abs=1e-15)
    # The queue holds already-normalised keys and is not renormalised: scaling it matters.
    assert moco_infonce(q0, k0, 2.0 * queue, 0.2).item() != pytest.approx(
        moco_infonce(q0, k0, queue, 0.2).item(), rel=1e-3
    )


def test_moco_rejects_bad_input() -> None:
    q = torch.randn(4, 8)
    with pytest.raises(ReprlabError, match=r"queue has shape \(5, 7\)"):
        moco_infonce(q, q, torch.randn(5, 7))
    with pytest.raises(ReprlabError, match=r"\(4, 8\) and \(3, 8\)"):
        moco_infonce(q, torch.randn(3, 8), torch.randn(5, 8))
    with pytest.raises(ReprlabError, match="temperature 0"):
        moco_infonce(q, q, torch.randn(5, 8), temperature=0)
    with pytest.raises(ReprlabError, match="queue has dtype torch.int64"):
        moco_infonce(q, q, torch.ones(5, 8, dtype=torch.long))
