"""Tests for Barlow Twins (Zbontar et al. 2021) against a slow float64 reference.

The reference standardises every dimension and forms every entry of the cross-correlation
with explicit loops over samples and dimensions. Closed forms on an orthogonal (Hadamard)
design and simulated ranks (threads) check the properties and the ``all_reduce`` hook.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from helpers_ranks import ThreadWorld
from reprlab.errors import ReprlabError
from reprlab.losses import barlow_twins_from_cc, barlow_twins_loss, cross_correlation


def slow_barlow(z1: Tensor, z2: Tensor, lambd: float, scale: float, eps: float) -> Tensor:
    """Standardise each column (biased variance), C_ij = sum_b a_bi b_bj / N, then the loss."""
    n, d = z1.shape

    def standardise(z: Tensor) -> list[list[Tensor]]:
        columns = []
        for j in range(d):
            column = [z[b, j] for b in range(n)]
            mean = sum(column) / n
            var = sum((x - mean) ** 2 for x in column) / n
            columns.append([(x - mean) / torch.sqrt(var + eps) for x in column])
        return columns  # columns[j][b]

    a, b = standardise(z1), standardise(z2)
    loss = z1.new_zeros(())
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][s] * b[j][s] for s in range(n)) / n
            loss = loss + ((1.0 - c_ij) ** 2 if i == j else lambd * c_ij**2)
    return scale * loss


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


def _views(batch: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Offsets and unequal scales per dimension, so the standardisation has work to do.
    z1 = 3.0 + torch.randn(batch, dim, generator=gen, dtype=torch.float64) * torch.linspace(
        0.5, 4.0, dim, dtype=torch.float64
    )
    z2 = 0.5 * z1 - 1.0 + torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return z1, z2


def _hadamard(n: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize(("lambd", "scale", "eps"), [(0.0051, 1.0, 1e-5), (0.5, 0.1, 1e-3)])
def test_barlow_twins_matches_slow_reference(
    batch: int, lambd: float, scale: float, eps: float
) -> None:
    z1_0, z2_0 = _views(batch, 6, seed=batch)
    r1, r2 = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    ref = slow_barlow(r1, r2, lambd, scale, eps)
    ref_g = torch.autograd.grad(ref, (r1, r2))

    a, b = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    got = barlow_twins_loss(a, b, lambd=lambd, scale=scale, eps=eps)
    assert got.dtype == torch.float64
    got_g = torch.autograd.grad(got, (a, b))
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    for g, r in zip(got_g, ref_g):
        _assert_rel_close(g, r, 1e-10)

    # The two pieces compose to the loss.
    composed = barlow_twins_from_cc(cross_correlation(z1_0, z2_0, eps=eps), lambd, scale)
    assert composed.item() == pytest.approx(got.item(), rel=1e-14)
    got32 = barlow_twins_loss(z1_0.float(), z2_0.float(), lambd=lambd, scale=scale, eps=eps)
    assert abs(got32.item() - ref.item()) <= 1e-5 * abs(ref.item())


def test_barlow_twins_closed_forms_on_an_orthogonal_design() -> None:
    # Columns 1..7 of an 8x8 Hadamard matrix: zero mean, biased variance 1, orthogonal. As
    # z1 = z2 (any per-dimension affine map of them) the cross-correlation is I / (1 + eps).
    design = _hadamard(8)[:, 1:]
    d = design.shape[1]
    affine = 2.0 * design + torch.arange(d, dtype=torch.float64)
    assert barlow_twins_loss(design, affine, lambd=0.5, eps=0.0).item() == pytest.approx(
        0.0, abs=1e-24
    )
    eps = 1e-3
    expected = d * (eps / (1 + eps)) ** 2
    got = barlow_twins_loss(design, design, lambd=0.5, eps=eps).item()
    assert got == pytest.approx(expected, rel=1e-10)
    # Anti-correlated twins: C = -I, every diagonal term (1 - (-1))^2 = 4.
    assert barlow_twins_loss(design, -design, eps=0.0).item() == pytest.approx(4.0 * d, rel=1e-13)
    # A cyclic shift of the dimensions: C is a permutation with no fixed point, so the
    # diagonal contributes d and the off-diagonal lambd * d.
    shifted = design.roll(1, dims=1)
    got = barlow_twins_loss(design, shifted, lambd=0.25, scale=0.1, eps=0.0).item()
    assert got == pytest.approx(0.1 * (d + 0.25 * d), rel=1e-13)
    c = cross_correlation(design, shifted, eps=0.0)
    torch.testing.assert_close(
        c, torch.eye(d, dtype=torch.float64).roll(1, dims=1), atol=1e-15, rtol=0
    )


@pytest.mark.parametrize("world", [2, 3])
def test_barlow_twins_all_reduce_equals_the_global_batch(world: int) -> None:
    # Each simulated rank holds a shard; statistics and C are summed over ranks, so the loss
    # is the single-process loss of the concatenated batch and (with a differentiable sum,
    # whose backward sums the gradients) each rank's gradient is world x its rows' gradient.
    z1_0, z2_0 = _views(4 * world, 5, seed=world)
    a, b = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    full = barlow_twins_loss(a, b, lambd=0.3)
    full_g = torch.autograd.grad(full, (a, b))

    shards1, shards2 = z1_0.chunk(world), z2_0.chunk(world)

    def rank_fn(rank: int, all_reduce):  # type: ignore[no-untyped-def]
        s1, s2 = shards1[rank].clone().requires_grad_(), shards2[rank].clone().requires_grad_()
        loss = barlow_twins_loss(s1, s2, lambd=0.3, all_reduce=all_reduce)
        return loss.detach(), torch.autograd.grad(loss, (s1, s2))

    results = ThreadWorld(world).run(rank_fn)
    for rank, (loss, (g1, g2)) in enumerate(results):
        assert loss.item() == pytest.approx(full.item(), rel=1e-12)
        _assert_rel_close(g1 / world, full_g[0].chunk(world)[rank], 1e-10)
        _assert_rel_close(g2 / world, full_g[1].chunk(world)[rank], 1e-10)
    # Without the hook a shard's loss is a different number (local statistics and C).
    alone = barlow_twins_loss(shards1[0], shards2[0], lambd=0.3)
    assert abs(alone.item() - full.item()) > 1e-3 * full.item()


def test_barlow_twins_rejects_bad_input() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ReprlabError, match=r"\(4, 3\) and \(4, 2\)"):
        barlow_twins_loss(z, torch.randn(4, 2))
    with pytest.raises(ReprlabError, match="lambd -1"):
        barlow_twins_loss(z, z, lambd=-1)
    with pytest.raises(ReprlabError, match="scale 0"):
        barlow_twins_loss(z, z, scale=0)
    with pytest.raises(ReprlabError, match="eps -1e-05"):
        barlow_twins_loss(z, z, eps=-1e-5)
    with pytest.raises(ReprlabError, match=r"cross-correlation has shape \(3, 4\)"):
        barlow_twins_from_cc(torch.randn(3, 4))
