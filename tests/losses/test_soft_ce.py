"""Tests for the soft-target cross-entropy (reprlab/losses/soft_ce.py): hard and soft targets,
label smoothing, bf16 logits and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import soft_cross_entropy


def _grads(loss: Tensor, *inputs: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_soft_cross_entropy_hard_labels_equal_torch(smoothing: float) -> None:
    gen = torch.Generator().manual_seed(11)
    logits = 3.0 * torch.randn(7, 10, generator=gen)
    target = torch.randint(0, 10, (7,), generator=gen)
    got = soft_cross_entropy(logits, target, label_smoothing=smoothing)
    ref = F.cross_entropy(logits, target, label_smoothing=smoothing)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)

    # Same through autograd: a wrong formula with a right value would still fail here.
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    (ga,) = _grads(soft_cross_entropy(a, target, smoothing), a)
    (gb,) = _grads(F.cross_entropy(b, target, label_smoothing=smoothing), b)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)

    # A one-hot float target is the same distribution as the index target.
    one_hot = F.one_hot(target, 10).float()
    from_one_hot = soft_cross_entropy(logits, one_hot, smoothing)
    assert from_one_hot.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_soft_cross_entropy_soft_targets_match_manual_sum(smoothing: float) -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    probs = torch.softmax(torch.randn(6, 4, generator=gen, dtype=torch.float64), dim=1)
    total = 0.0
    for i in range(6):
        log_softmax_row = [
            logits[i, c].item() - math.log(sum(math.exp(v) for v in logits[i].tolist()))
            for c in range(4)
        ]
        q = [(1 - smoothing) * probs[i, c].item() + smoothing / 4 for c in range(4)]
        total += -sum(qc * lc for qc, lc in zip(q, log_softmax_row))
    expected = total / 6
    got = soft_cross_entropy(logits, probs, label_smoothing=smoothing)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_soft_cross_entropy_bf16_logits_and_errors() -> None:
    logits = torch.randn(4, 3).bfloat16()
    target = torch.tensor([0, 2, 1, 1])
    got = soft_cross_entropy(logits, target)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(F.cross_entropy(logits.float(), target).item(), rel=1e-6)

    with pytest.raises(ReprlabError, match="class index 3"):
        soft_cross_entropy(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ReprlabError, match="class index -1"):
        soft_cross_entropy(torch.randn(2, 3), torch.tensor([-1, 0]))
    with pytest.raises(ReprlabError, match="label_smoothing 1.0"):
        soft_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), label_smoothing=1.0)
    with pytest.raises(ReprlabError, match=r"soft target has shape \(2, 4\)"):
        soft_cross_entropy(torch.randn(2, 3), torch.rand(2, 4))
    with pytest.raises(ReprlabError, match=r"hard target has shape \(3,\)"):
        soft_cross_entropy(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ReprlabError, match=r"logits have shape \(6,\)"):
        soft_cross_entropy(torch.randn(6), torch.tensor([0, 1]))
