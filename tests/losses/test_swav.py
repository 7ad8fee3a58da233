"""Tests for SwAV's Sinkhorn-Knopp codes and swapped-prediction loss (Caron et al. 2020).

Sinkhorn is checked against a reference in plain Python floats that starts from the raw
``exp(scores / eps)`` (no stabilising shift, so it also checks that the shift cancels
exactly), and against its marginals; the loss against per-pair, per-sample loops.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from helpers_ranks import ThreadWorld
from reprlab.errors import ReprlabError
from reprlab.losses import sinkhorn_knopp, swav_loss


def slow_sinkhorn(scores: Tensor, eps: float, n_iters: int) -> list[list[float]]:
    rows = scores.tolist()
    batch, k = len(rows), len(rows[0])
    q = [[math.exp(s / eps) for s in row] for row in rows]
    for _ in range(n_iters):
        for j in range(k):  # prototype j gets total mass 1/K
            mass = sum(q[b][j] for b in range(batch))
            for b in range(batch):
                q[b][j] /= mass * k
        for b in range(batch):  # sample b gets total mass 1/B
            mass = sum(q[b])
            q[b] = [x / (mass * batch) for x in q[b]]
    return [[x * batch for x in row] for row in q]


def slow_swav(
    scores: list[Tensor], codes: list[Tensor], temperature: float, assign: tuple[int, ...]
) -> Tensor:
    batch = scores[0].shape[0]
    total = scores[0].new_zeros(())
    for a, i in enumerate(assign):
        per_crop = scores[0].new_zeros(())
        for j, crop in enumerate(scores):
            if j == i:
                continue
            for b in range(batch):
                row = crop[b] / temperature
                log_p = row - torch.log(torch.exp(row).sum())
                per_crop = per_crop - (codes[a][b] * log_p).sum() / batch
        total = total + per_crop / (len(scores) - 1)
    return total / len(assign)


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


def _cosine_scores(batch: int, k: int, seed: int, n_crops: int = 1) -> list[Tensor]:
    """Scores of unit features against unit prototypes, as SwAV computes them."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = F.normalize(torch.randn(k, 8, generator=gen, dtype=torch.float64), dim=1)
    image = torch.randn(batch, 8, generator=gen, dtype=torch.float64)
    crops = [
        image + 0.7 * torch.randn(batch, 8, generator=gen, dtype=torch.float64)
        for _ in range(n_crops)
    ]
    return [F.normalize(c, dim=1) @ prototypes.T for c in crops]


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize("k", [4, 10])
@pytest.mark.parametrize("eps", [0.05, 0.1, 0.5])
@pytest.mark.parametrize("n_iters", [1, 3, 10])
def test_sinkhorn_matches_slow_reference(batch: int, k: int, eps: float, n_iters: int) -> None:
    (scores,) = _cosine_scores(batch, k, seed=batch * k)
    ref = torch.tensor(slow_sinkhorn(scores, eps, n_iters), dtype=torch.float64)
    got = sinkhorn_knopp(scores, epsilon=eps, n_iters=n_iters)
    assert got.dtype == torch.float64 and got.shape == (batch, k)
    _assert_rel_close(got, ref, 1e-12)
    got32 = sinkhorn_knopp(scores.float(), epsilon=eps, n_iters=n_iters)
    assert got32.dtype == torch.float32
    _assert_rel_close(got32, ref, 1e-4)


@pytest.mark.parametrize(("batch", "k"), [(8, 4), (17, 10), (6, 12)])
def test_sinkhorn_marginals(batch: int, k: int) -> None:
    (scores,) = _cosine_scores(batch, k, seed=batch + k)
    for n_iters in (1, 3):
        q = sinkhorn_knopp(scores, 0.05, n_iters)
        torch.testing.assert_close(
            q.sum(dim=1), torch.ones(batch, dtype=torch.float64), rtol=0, atol=1e-13
        )
        assert (q >= 0).all()
    # Converged: every prototype holds B/K of the batch's total mass B.
    q = sinkhorn_knopp(scores, 0.5, 500)
    torch.testing.assert_close(
        q.sum(dim=1), torch.ones(batch, dtype=torch.float64), rtol=0, atol=1e-13
    )
    torch.testing.assert_close(
        q.sum(dim=0), torch.full((k,), batch / k, dtype=torch.float64), rtol=0, atol=1e-9
    )
    # ... which a plain softmax over prototypes does not do.
    softmax = torch.softmax(scores / 0.5, dim=1)
    assert (softmax.sum(dim=0) - batch / k).abs().max() > 1e-3


def test_sinkhorn_has_no_gradient_and_float32_survives_large_scores() -> None:
    (scores,) = _cosine_scores(8, 6, seed=0)
    leaf = scores.clone().requires_grad_()
    assert not sinkhorn_knopp(leaf).requires_grad
    # Scores beyond 4.4 at eps = 0.05 put exp(score / eps) beyond float32's range (e^88).
    large = 8.0 * scores
    assert torch.isinf(torch.exp(large.float() / 0.05)).any()
    ref = torch.tensor(slow_sinkhorn(large, 0.05, 3), dtype=torch.float64)
    got32 = sinkhorn_knopp(large.float(), 0.05, 3)
    assert torch.isfinite(got32).all()
    _assert_rel_close(got32, ref, 1e-4)
    assert sinkhorn_knopp(large.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize("world", [2, 3])
def test_sinkhorn_all_reduce_equipartitions_the_global_batch(world: int) -> None:
    # Each rank keeps its own rows but the prototype masses are global, so the ranks' codes
    # stacked are the single-process codes of the whole batch (despite per-rank shifts).
    (scores,) = _cosine_scores(4 * world, 5, seed=world)
    scores[:4] += 0.8  # give rank 0 different per-prototype maxima from the others
    expected = sinkhorn_knopp(scores, 0.05, 3)
    shards = scores.chunk(world)
    results = ThreadWorld(world).run(
        lambda r, ar: sinkhorn_knopp(shards[r], 0.05, 3, all_reduce=ar)
    )
    _assert_rel_close(torch.cat(results), expected, 1e-12)
    assert not torch.allclose(sinkhorn_knopp(shards[0], 0.05, 3), expected[:4], rtol=1e-3)


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize(("n_crops", "assign"), [(2, (0, 1)), (6, (0, 1)), (6, (1,)), (3, (2, 0))])
def test_swav_loss_matches_slow_reference(
    batch: int, temperature: float, n_crops: int, assign: tuple[int, ...]
) -> None:
    scores0 = _cosine_scores(batch, 7, seed=batch + n_crops, n_crops=n_crops)
    codes = [sinkhorn_knopp(scores0[i]) for i in assign]
    rs = [s.clone().requires_grad_() for s in scores0]
    ref = slow_swav(rs, codes, temperature, assign)
    # A crop in crops_for_assign is never predicted from itself: with (1,), crop 1 is unused.
    ref_g = [
        torch.zeros_like(r) if g is None else g
        for r, g in zip(rs, torch.autograd.grad(ref, rs, allow_unused=True))
    ]

    ss = [s.clone().requires_grad_() for s in scores0]
    got = swav_loss(ss, codes, temperature, crops_for_assign=assign)
    assert got.dtype == torch.float64
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    _assert_rel_close(torch.stack(torch.autograd.grad(got, ss)), torch.stack(ref_g), 1e-10)

    stacked = swav_loss(torch.stack(scores0), torch.stack(codes), temperature, assign)
    assert stacked.item() == pytest.approx(ref.item(), rel=1e-12)
    got32 = swav_loss([s.float() for s in scores0], [c.float() for c in codes], temperature, assign)
    assert abs(got32.item() - ref.item()) <= 1e-5 * abs(ref.item())


def test_swav_loss_closed_form_and_assignment_order() -> None:
    # All crops score log(1, 2, 3) and the codes are softmax of that at T = 1: every pair's
    # cross-entropy is the entropy of (1/6, 2/6, 3/6).
    row = torch.log(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)).repeat(4, 1)
    code = torch.tensor([[1 / 6, 2 / 6, 3 / 6]], dtype=torch.float64).repeat(4, 1)
    entropy = -(1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6) + 3 / 6 * math.log(3 / 6))
    assert swav_loss([row] * 4, [code, code], temperature=1.0).item() == pytest.approx(
        entropy, rel=1e-14
    )
    # Codes are matched to crops_for_assign by position: (1, 0) with swapped codes is (0, 1).
    scores = _cosine_scores(5, 4, seed=9, n_crops=3)
    q0, q1 = sinkhorn_knopp(scores[0]), sinkhorn_knopp(scores[1])
    a = swav_loss(scores, [q0, q1], 0.1, (0, 1)).item()
    assert swav_loss(scores, [q1, q0], 0.1, (1, 0)).item() == pytest.approx(a, rel=1e-13)
    assert abs(swav_loss(scores, [q1, q0], 0.1, (0, 1)).item() - a) > 1e-3


def test_swav_rejects_bad_input() -> None:
    s = [torch.randn(4, 5) for _ in range(3)]
    q = [torch.rand(4, 5) for _ in range(2)]
    with pytest.raises(ReprlabError, match="crops_for_assign=\\(0, 3\\)"):
        swav_loss(s, q, crops_for_assign=(0, 3))
    with pytest.raises(ReprlabError, match="crops_for_assign=\\(0, 0\\)"):
        swav_loss(s, q, crops_for_assign=(0, 0))
    with pytest.raises(ReprlabError, match="1 of codes"):
        swav_loss(s, q[:1])
    with pytest.raises(ReprlabError, match=r"codes have shape \(4, 6\)"):
        swav_loss(s, [torch.rand(4, 6)] * 2)
    with pytest.raises(ReprlabError, match="temperature 0"):
        swav_loss(s, q, temperature=0)
    with pytest.raises(ReprlabError, match="n_iters 0"):
        sinkhorn_knopp(s[0], n_iters=0)
    with pytest.raises(ReprlabError, match="epsilon -0.05"):
        sinkhorn_knopp(s[0], epsilon=-0.05)
    with pytest.raises(ReprlabError, match="expected a floating"):
        sinkhorn_knopp(torch.randn(5))
