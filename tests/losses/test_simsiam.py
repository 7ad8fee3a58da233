"""Tests for SimSiam's loss (Chen & He 2021) against a slow float64 reference.

The reference computes D(p, z) sample by sample from dot products and norms; the symmetrised
loss must match it in value and in the gradients of the predictions, and must pass no
gradient at all to the projections (the stop-gradient the method depends on).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from reprlab.errors import ReprlabError
from reprlab.losses import negative_cosine_similarity, simsiam_loss


def slow_d(p: Tensor, z: Tensor) -> Tensor:
    """D(p, z) = -(1/B) sum_i <p_i, z_i> / (|p_i| |z_i|), one sample at a time."""
    terms = []
    for p_i, z_i in zip(p.unbind(0), z.unbind(0)):
        norms = torch.sqrt(torch.dot(p_i, p_i)) * torch.sqrt(torch.dot(z_i, z_i))
        terms.append(-torch.dot(p_i, z_i) / norms)
    return torch.stack(terms).sum() / len(terms)


def _assert_rel_close(actual: Tensor, expected: Tensor, rel: float) -> None:
    scale = expected.abs().max().clamp_min(1e-12)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rel * scale, f"max err {err.item():.3e} > {rel:.0e} * scale {scale.item():.3e}"


def _views(batch: int, dim: int, seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    z2 = z1 + 0.8 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    p1 = z1 + 0.5 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    p2 = z2 + 0.5 * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    return [p1, p2, z1, z2]


@pytest.mark.parametrize("batch", [2, 3, 8, 17])
@pytest.mark.parametrize("dim", [4, 32])
def test_simsiam_matches_slow_reference_with_stop_gradient(batch: int, dim: int) -> None:
    base = _views(batch, dim, seed=10 * batch + dim)

    p1r, p2r, z1r, z2r = (t.clone().requires_grad_() for t in base)
    # The reference's stop-gradient is explicit: D(p1, sg(z2)) and D(p2, sg(z1)).
    ref = 0.5 * slow_d(p1r, z2r.detach()) + 0.5 * slow_d(p2r, z1r.detach())
    ref_g = torch.autograd.grad(ref, (p1r, p2r))

    p1, p2, z1, z2 = (t.clone().requires_grad_() for t in base)
    got = simsiam_loss(p1, p2, z1, z2)
    assert got.dtype == torch.float64
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    g = torch.autograd.grad(got, (p1, p2, z1, z2), allow_unused=True)
    _assert_rel_close(g[0], ref_g[0], 1e-10)
    _assert_rel_close(g[1], ref_g[1], 1e-10)
    assert g[2] is None and g[3] is None, "projections must get no gradient (stop-gradient)"

    # float32 agrees to float32 precision.
    got32 = simsiam_loss(*(t.float() for t in base))
    assert abs(got32.item() - ref.item()) <= 1e-6


@pytest.mark.parametrize("batch", [2, 5, 17])
def test_negative_cosine_similarity_has_gradients_in_both_arguments(batch: int) -> None:
    p0, _, z0, _ = _views(batch, 12, seed=batch)
    pr, zr = p0.clone().requires_grad_(), z0.clone().requires_grad_()
    ref = slow_d(pr, zr)
    ref_g = torch.autograd.grad(ref, (pr, zr))
    p, z = p0.clone().requires_grad_(), z0.clone().requires_grad_()
    got = negative_cosine_similarity(p, z)
    g = torch.autograd.grad(got, (p, z))
    assert abs(got.item() - ref.item()) <= 1e-10 * abs(ref.item())
    for a, b in zip(g, ref_g):
        _assert_rel_close(a, b, 1e-10)


def test_simsiam_closed_forms_and_symmetry() -> None:
    gen = torch.Generator().manual_seed(3)
    z1 = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    z2 = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    # Each prediction aligned with the *other* view's projection: the minimum, -1.
    assert simsiam_loss(3.0 * z2, 0.5 * z1, z1, z2).item() == pytest.approx(-1.0, rel=1e-14)
    # Aligned with its own view only (not the other): not the minimum.
    assert simsiam_loss(z1, z2, z1, z2).item() > -0.9
    assert simsiam_loss(-z2, -z1, z1, z2).item() == pytest.approx(1.0, rel=1e-14)
    # Swapping the views leaves the symmetrised loss unchanged.
    p1, p2 = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    a = simsiam_loss(p1, p2, z1.float(), z2.float()).item()
    b = simsiam_loss(p2, p1, z2.float(), z1.float()).item()
    assert a == pytest.approx(b, rel=1e-6)


def test_simsiam_rejects_bad_input() -> None:
    good = torch.randn(4, 6)
    with pytest.raises(ReprlabError, match=r"\(4, 6\) and \(3, 6\)"):
        simsiam_loss(good, good, good, torch.randn(3, 6))
    with pytest.raises(ReprlabError, match="projection z1 must be a tensor"):
        simsiam_loss(good, good, [[1.0]], good)  # type: ignore[arg-type]
    with pytest.raises(ReprlabError, match="expected a floating"):
        negative_cosine_similarity(torch.randn(6), torch.randn(6))
