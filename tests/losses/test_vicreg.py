"""Tests for VICReg (Bardes et al. 2022) against a slow float64 reference.

The reference writes each of the paper's three terms with explicit loops over samples and
dimensions (unbiased variance and covariance, as in the paper's pseudo-code); every term and
the gradient of the total must match, and closed forms pin each term's behaviour.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import VICRegTerms, vicreg_loss


def slow_vicreg(
    z1: Tensor, z2: Tensor, sim: float, std: float, cov: float, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n, d = z1.shape
    invariance = sum((z1[b, j] - z2[b, j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def branch(z: Tensor) -> tuple[Tensor, Tensor]:
        means = [sum(z[b, j] for b in range(n)) / n for j in range(d)]
        hinge = z.new_zeros(())
        for j in range(d):
            variance = sum((z[b, j] - means[j]) ** 2 for b in range(n)) / (n - 1)
            hinge = hinge + torch.clamp(1.0 - torch.sqrt(variance + eps), min=0.0)
        off = z.new_zeros(())
        for i in range(d):
            for j in range(d):
                if i != j:
                    c_ij = sum((z[b, i] - means[i]) * (z[b, j] - means[j]) for b in range(n))
                    off = off + (c_ij / (n - 1)) ** 2
        return hinge / d, off / d

    v1, c1 = branch(z1)
    v2, c2 = branch(z2)
    variance, covariance = v1 + v2, c1 + c2
    total = sim * invariance + std * variance + cov * covariance
    return total, invariance, variance, covariance


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


def _views(batch: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Per-dimension scales from 0.3 to 2.5: some dimensions inside the variance hinge, some out.
    scales = torch.linspace(0.3, 2.5, dim, dtype=torch.float64)
    z1 = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * scales + 1.0
    z2 = z1 + 0.5 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return z1, z2


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize(
    ("sim", "std", "cov", "eps"), [(25.0, 25.0, 1.0, 1e-4), (1.0, 0.5, 10.0, 1e-2)]
)
def test_vicreg_matches_slow_reference(
    batch: int, sim: float, std: float, cov: float, eps: float
) -> None:
    z1_0, z2_0 = _views(batch, 6, seed=batch)
    r1, r2 = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    ref = slow_vicreg(r1, r2, sim, std, cov, eps)
    ref_g = torch.autograd.grad(ref[0], (r1, r2))

    a, b = z1_0.clone().requires_grad_(), z2_0.clone().requires_grad_()
    got = vicreg_loss(a, b, sim_coeff=sim, std_coeff=std, cov_coeff=cov, eps=eps)
    assert isinstance(got, VICRegTerms)
    for name, g, r in zip(VICRegTerms._fields, got, ref):
        assert g.dtype == torch.float64
        assert abs(g.item() - r.item()) <= 1e-10 * abs(r.item()), name
    got_g = torch.autograd.grad(got.loss, (a, b))
    for g, r in zip(got_g, ref_g):
        _assert_rel_close(g, r, 1e-10)
    assert got.variance.item() > 0  # the data does exercise the hinge

    got32 = vicreg_loss(z1_0.float(), z2_0.float(), sim, std, cov, eps)
    assert abs(got32.loss.item() - ref[0].item()) <= 1e-5 * abs(ref[0].item())


def test_vicreg_term_closed_forms() -> None:
    # Hadamard columns 1..3 of a 4x4 matrix, scaled by 5: zero mean, orthogonal (so zero
    # covariance), unbiased std 5 * sqrt(4/3) >= 1 (so zero variance hinge, zero gradient).
    h = torch.tensor(
        [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
    )
    design = (5.0 * h[:, 1:]).requires_grad_()
    terms = vicreg_loss(design, design)
    assert terms.invariance.item() == 0.0
    assert terms.variance.item() == 0.0
    assert terms.covariance.item() == pytest.approx(0.0, abs=1e-24)
    assert terms.loss.item() == pytest.approx(0.0, abs=1e-22)
    (g,) = torch.autograd.grad(vicreg_loss(design, design.detach()).variance, design)
    assert torch.count_nonzero(g) == 0

    # A collapsed (constant) embedding: each branch's hinge is 1 - sqrt(eps) in every dimension.
    flat = torch.full((6, 4), 3.0, dtype=torch.float64)
    eps = 1e-4
    terms = vicreg_loss(flat, flat, eps=eps)
    assert terms.variance.item() == pytest.approx(2.0 * (1.0 - math.sqrt(eps)), rel=1e-14)
    assert terms.covariance.item() == 0.0

    # Two perfectly correlated dimensions with unbiased variance 1: Cov_01 = Cov_10 = 1, so
    # each branch's covariance term is 2 / D, and the invariance is the mean squared gap.
    x = torch.tensor([[-1.0], [1.0]], dtype=torch.float64) * math.sqrt(0.5)
    pair = torch.cat([x, x], dim=1)
    terms = vicreg_loss(pair, pair + 0.5, sim_coeff=2.0, std_coeff=0.0, cov_coeff=3.0)
    assert terms.covariance.item() == pytest.approx(2.0 * 2.0 / 2, rel=1e-14)
    assert terms.invariance.item() == pytest.approx(0.25, rel=1e-14)
    assert terms.loss.item() == pytest.approx(2.0 * 0.25 + 3.0 * 2.0, rel=1e-14)


def test_vicreg_rejects_bad_input() -> None:
    with pytest.raises(ReprlabError, match="at least 2 row"):
        vicreg_loss(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ReprlabError, match=r"\(4, 3\) and \(4, 2\)"):
        vicreg_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ReprlabError, match="std_coeff -1"):
        vicreg_loss(torch.randn(4, 3), torch.randn(4, 3), std_coeff=-1)
    with pytest.raises(ReprlabError, match="eps 0"):
        vicreg_loss(torch.randn(4, 3), torch.randn(4, 3), eps=0)
